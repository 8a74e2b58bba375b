//! The programs in examples/ run against a real server and do what their
//! docs say: the checkout holds and consumes stock exactly once, however
//! often its calls are sent, and the storefront shows the result.

mod common;

#[path = "../examples/checkout.rs"]
#[allow(dead_code)]
mod checkout;
#[path = "../examples/storefront.rs"]
#[allow(dead_code)]
mod storefront;

use common::Server;
use stockraft::proto::v1::Outcome;

#[tokio::test]
async fn the_checkout_example_holds_then_consumes_two_units_once() {
    let mut server = Server::start(&[]);
    server.wait_ready().await.unwrap();

    let first = checkout::run(&server.addr, None, "SKU-EX", "store-12")
        .await
        .unwrap();
    assert_eq!(first.available_before, 5, "{first:?}");
    assert_eq!(first.reserve_outcome, Outcome::Reserved, "{first:?}");
    assert_eq!(first.available_held, 3, "{first:?}");
    assert_eq!(first.commit_outcome, Outcome::Committed, "{first:?}");
    // The repeated commit reports the first one's outcome and consumes
    // nothing more.
    assert_eq!(first.commit_again_outcome, Outcome::Committed, "{first:?}");
    assert_eq!(first.available_after, 3, "{first:?}");

    // A second run has ids of its own: 5 more received, 2 more sold.
    let second = checkout::run(&server.addr, None, "SKU-EX", "store-12")
        .await
        .unwrap();
    assert_ne!(second.reservation_id, first.reservation_id);
    assert_eq!(second.available_before, 8, "{second:?}");
    assert_eq!(second.available_after, 6, "{second:?}");

    let page = storefront::read(&server.addr, None, vec!["SKU-EX".to_string()])
        .await
        .unwrap();
    let text = storefront::render(&page);
    assert!(text.contains("SKU-EX: 6 available"), "{text}");
    assert!(
        text.contains("store-12: 6 available (6 on hand, 0 held, 0 kept back)"),
        "{text}"
    );
}

#[tokio::test]
async fn the_examples_report_a_refused_token_instead_of_retrying() {
    // The tokens file lists a token's role and SHA-256, never the token.
    let token = stockraft::server::auth::new_token();
    let hash = stockraft::server::auth::hash_hex(&token);
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), format!("admin {hash} example-admin\n")).unwrap();
    let mut server = Server::start(&["--tokens", tokens.path().to_str().unwrap()]);
    server.wait_ready().await.unwrap();

    let refused = checkout::run(&server.addr, Some("not-a-token"), "SKU-EX", "store-1")
        .await
        .expect_err("an unknown token is refused");
    let status = refused
        .downcast_ref::<tonic::Status>()
        .expect("a gRPC status");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");

    let done = checkout::run(&server.addr, Some(&token), "SKU-EX", "store-1")
        .await
        .unwrap();
    assert_eq!(done.commit_outcome, Outcome::Committed, "{done:?}");
}
