//! `stockraft certs` and `stockraft token`: the credentials a secured
//! cluster runs with, made offline (neither calls a server).

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Args;

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Where to write them (ca.pem, ca.key, member-ID.pem/.key,
    /// client-NAME.pem/.key).
    #[arg(long, default_value = "./stockraft-certs")]
    pub dir: PathBuf,
    /// Member ids to make certificates for: 1,2,3.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub members: Vec<u64>,
    /// Host names and IP addresses in every member's certificate; {id} is
    /// the member's id (stockraft-{id}, say).
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1,::1")]
    pub hosts: Vec<String>,
    /// Client certificates to make, by name: ops,checkout.
    #[arg(long, value_delimiter = ',')]
    pub clients: Vec<String>,
    /// Sign with the CA already in --dir (for a member or client added
    /// later) instead of making a new one.
    #[arg(long)]
    pub add: bool,
}

/// `certs`: writes the files and prints their paths, one a line.
pub(super) fn certs(args: CertsArgs) -> Result<()> {
    if args.members.contains(&0) {
        return Err(anyhow!("--members: ids are positive integers"));
    }
    let plan = stockraft::certs::Plan {
        dir: args.dir,
        members: args.members,
        hosts: args.hosts,
        clients: args.clients,
        add: args.add,
    };
    for path in stockraft::certs::make(&plan)? {
        println!("{}", path.display());
    }
    Ok(())
}

/// `token`: prints a new token, and the tokens-file line that lets it in
/// (the server keeps only the token's hash).
pub(super) fn token(role: &str, name: &str) -> Result<()> {
    if name.chars().any(char::is_whitespace) {
        return Err(anyhow!("--name: one word, no spaces"));
    }
    let token = stockraft::server::auth::new_token();
    println!("token: {token}");
    let hash = stockraft::server::auth::hash_hex(&token);
    println!("tokens file line: {role} {hash} {name}");
    Ok(())
}
