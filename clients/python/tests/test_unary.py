"""The blocking client against a real server: every call, retries by id,
outcomes and typed errors."""

from __future__ import annotations

import uuid

import grpc
import pytest

import stockraft
from stockraft import Reason, pb


@pytest.fixture
def client(server):
    with stockraft.Client(server.address) as c:
        yield c


def level(client, sku, node):
    """(on_hand, reserved, safety_stock, available) of one counter."""
    answer = client.get_availability([sku], [node])
    rows = [n for s in answer.skus for n in s.nodes if n.node == node]
    if not rows:
        return (0, 0, 0, 0)
    n = rows[0]
    return (n.on_hand, n.reserved, n.safety_stock, n.available)


def stock(client, unique, sku, node, qty):
    # A receipt of its own each time (a fresh txn id), never a retry.
    answer = client.adjust(f"RCV-{uuid.uuid4().hex}", sku, node, qty, "RECEIVE")
    assert answer.outcome == pb.OUTCOME_APPLIED


def test_reserve_then_commit_consumes_the_held_stock(client, unique):
    sku, order = unique("SKU"), unique("ORDER")
    stock(client, unique, sku, "store", 10)
    held = client.reserve(order, [(sku, "store", 3)], ttl_ms=60_000)
    assert held.outcome == pb.OUTCOME_RESERVED
    assert held.expires_at_ms > 0
    assert level(client, sku, "store") == (10, 3, 0, 7)
    assert client.commit(order).outcome == pb.OUTCOME_COMMITTED
    assert level(client, sku, "store") == (7, 0, 0, 7)
    got = client.get_reservation(order)
    assert got.state == pb.RESERVATION_STATE_COMMITTED
    assert [(l.sku, l.node, l.qty) for l in got.lines] == [(sku, "store", 3)]
    assert got.finished_at_ms >= got.created_at_ms > 0


def test_release_returns_the_stock_and_a_later_commit_is_refused(client, unique):
    sku, cart = unique("SKU"), unique("CART")
    stock(client, unique, sku, "dc", 5)
    assert client.reserve(cart, [(sku, "dc", 5)]).outcome == pb.OUTCOME_RESERVED
    assert level(client, sku, "dc")[3] == 0
    assert client.release(cart).outcome == pb.OUTCOME_RELEASED
    assert level(client, sku, "dc") == (5, 0, 0, 5)
    with pytest.raises(stockraft.errors.FailedPrecondition) as caught:
        client.commit(cart)
    error = caught.value
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == Reason.RESERVATION_NOT_ACTIVE
    assert error.metadata.get("state") == "RELEASED"
    assert error.metadata.get("reservation_id") == cart
    assert not error.retryable


def test_extend_moves_the_deadline_of_an_open_hold(client, unique):
    sku, cart = unique("SKU"), unique("CART")
    stock(client, unique, sku, "store", 2)
    first = client.reserve(cart, [(sku, "store", 1)], ttl_ms=10_000)
    extended = client.extend(cart, ttl_ms=3_600_000)
    assert extended.outcome == pb.OUTCOME_RESERVED
    # About 3,590 s later than the first deadline; allow for clock steps.
    assert extended.expires_at_ms - first.expires_at_ms > 3_500_000
    assert client.get_reservation(cart).expires_at_ms == extended.expires_at_ms
    assert client.get_reservation(cart).state == pb.RESERVATION_STATE_OPEN


def test_unknown_reservation_is_an_outcome_not_an_error(client, unique):
    missing = unique("NEVER-MADE")
    assert client.get_reservation(missing).outcome == pb.OUTCOME_NOT_FOUND
    assert client.commit(missing).outcome == pb.OUTCOME_NOT_FOUND


def test_a_sale_is_never_refused_and_reports_a_short_node(client, unique):
    sku = unique("SKU")
    stock(client, unique, sku, "store", 2)
    sale = client.sell(unique("POS"), sku, "store", 3)
    assert sale.outcome == pb.OUTCOME_APPLIED
    assert sale.short
    assert sale.level.on_hand == -1 and sale.level.available == -1


def test_adjust_checks_the_sign_against_the_reason(client, unique):
    sku = unique("SKU")
    stock(client, unique, sku, "store", 4)
    damaged = client.adjust(unique("DMG"), sku, "store", -1, "DAMAGE")
    assert damaged.level.on_hand == 3
    with pytest.raises(stockraft.errors.InvalidArgument) as caught:
        client.adjust(unique("BAD"), sku, "store", 1, pb.ADJUST_REASON_SHRINK)
    assert caught.value.reason == Reason.DELTA_SIGN_MISMATCH
    assert [v.field for v in caught.value.field_violations] == ["delta"]
    assert level(client, sku, "store")[0] == 3


def test_set_on_hand_compare_and_set(client, unique):
    sku = unique("SKU")
    stock(client, unique, sku, "store", 6)
    with pytest.raises(stockraft.errors.FailedPrecondition) as caught:
        client.set_on_hand(unique("COUNT-1"), sku, "store", 4, expected_on_hand=5)
    error = caught.value
    assert error.reason == Reason.STALE_ON_HAND
    assert error.metadata.get("on_hand") == "6"
    assert error.metadata.get("expected_on_hand") == "5"
    assert error.metadata.get("sku") == sku and error.metadata.get("node") == "store"
    assert level(client, sku, "store")[0] == 6  # nothing applied
    # Retried with the value the error reported, it applies.
    answer = client.set_on_hand(unique("COUNT-2"), sku, "store", 4, expected_on_hand=int(error.metadata.get("on_hand", 6)))
    assert answer.outcome == pb.OUTCOME_APPLIED and answer.level.on_hand == 4


def test_safety_stock_is_kept_back_from_availability(client, unique):
    sku = unique("SKU")
    stock(client, unique, sku, "store", 10)
    answer = client.set_safety_stock(sku, "store", 4)
    assert answer.outcome == pb.OUTCOME_APPLIED
    assert answer.level.available == 6
    assert level(client, sku, "store") == (10, 0, 4, 6)


def test_availability_sums_nodes_counting_short_ones_as_zero(client, unique):
    sku = unique("SKU")
    stock(client, unique, sku, "a", 5)
    stock(client, unique, sku, "b", 1)
    client.sell(unique("POS"), sku, "b", 3)  # b is now 2 short
    answer = client.get_availability([sku])
    assert len(answer.skus) == 1
    by_node = {n.node: n.available for n in answer.skus[0].nodes}
    assert by_node == {"a": 5, "b": -2}
    assert answer.skus[0].total_available == 5
    local = client.get_availability([sku], consistency=pb.CONSISTENCY_LOCAL)
    assert local.skus[0].total_available == 5


def test_retries_with_the_same_id_answer_alike_and_apply_once(client, unique):
    sku, order, txn = unique("SKU"), unique("ORDER"), unique("RCV")
    first = client.adjust(txn, sku, "store", 8, "RECEIVE")
    again = client.adjust(txn, sku, "store", 8, "RECEIVE")
    assert again == first
    assert level(client, sku, "store")[0] == 8
    held = client.reserve(order, [(sku, "store", 3)])
    held_again = client.reserve(order, [(sku, "store", 3)])
    assert held_again.outcome == held.outcome == pb.OUTCOME_RESERVED
    assert held_again.expires_at_ms == held.expires_at_ms
    assert level(client, sku, "store")[1] == 3
    assert client.commit(order).outcome == client.commit(order).outcome == pb.OUTCOME_COMMITTED
    assert level(client, sku, "store")[:2] == (5, 0)
    # A repeated reserve reports the reservation's current state.
    assert client.reserve(order, [(sku, "store", 3)]).outcome == pb.OUTCOME_COMMITTED


def test_the_same_id_with_another_payload_is_refused(client, unique):
    sku, order = unique("SKU"), unique("ORDER")
    stock(client, unique, sku, "store", 5)
    client.reserve(order, [(sku, "store", 1)])
    with pytest.raises(stockraft.errors.AlreadyExists) as caught:
        client.reserve(order, [(sku, "store", 2)])
    assert caught.value.reason == Reason.RESERVATION_ID_REUSED
    assert caught.value.metadata.get("reservation_id") == order


def test_insufficient_stock_is_an_outcome_with_the_shortages(client, unique):
    sku, order = unique("SKU"), unique("ORDER")
    stock(client, unique, sku, "store", 2)
    stock(client, unique, sku, "dc", 9)
    answer = client.reserve(order, [(sku, "store", 3), (sku, "dc", 4), (sku, "store", 1)])
    assert answer.outcome == pb.OUTCOME_INSUFFICIENT_STOCK
    # Lines of one (sku, node) are summed; only the short one is listed.
    assert [(s.sku, s.node, s.requested, s.available) for s in answer.shortages] == [(sku, "store", 4, 2)]
    assert level(client, sku, "dc")[1] == 0  # all or nothing
    # Not remembered: the same id succeeds once stock arrives.
    stock(client, unique, sku, "store", 2)
    assert client.reserve(order, [(sku, "store", 3), (sku, "dc", 4), (sku, "store", 1)]).outcome == pb.OUTCOME_RESERVED


def test_invalid_input_names_the_field(client, unique):
    with pytest.raises(stockraft.errors.InvalidArgument) as caught:
        client.reserve(unique("ORDER"), [(unique("SKU"), "store", 1), (unique("SKU"), "store", 0)])
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == Reason.VALUE_OUT_OF_RANGE
    assert error.domain == "stockraft"
    assert [v.field for v in error.field_violations] == ["lines[1].qty"]
    assert error.metadata.get("value") == "0"
    with pytest.raises(stockraft.errors.InvalidArgument) as caught:
        client.reserve(unique("ORDER"), [])
    assert caught.value.reason == Reason.NO_LINES
    with pytest.raises(stockraft.errors.InvalidArgument) as caught:
        client.sell("", unique("SKU"), "store", 1)
    assert caught.value.reason == Reason.FIELD_EMPTY
    assert [v.field for v in caught.value.field_violations] == ["txn_id"]


def test_addresses_come_from_the_environment(server, monkeypatch, unique):
    # Two addresses, the first a port nobody listens on: with no leader
    # known the client moves to the member that answers.
    monkeypatch.setenv("STOCKRAFT_SERVER", f"127.0.0.1:1, {server.address}")
    with stockraft.Client() as client:
        sku = unique("SKU")
        assert client.adjust(unique("RCV"), sku, "store", 1, "RECEIVE").outcome == pb.OUTCOME_APPLIED
        assert client.target == server.address
