//! The command line of access control: `ipwho keys …`, and the flags with
//! which `serve` decides whether credentials are needed and where it may
//! listen without them.

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Args, Subcommand};
use sqlx::PgPool;

use super::keys::{self, generate_key, parse_expiry};
use super::{Access, AllowedHosts, Scopes};

/// `ipwho keys …`.
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Make a key and print it (shown this once; only its SHA-256 is stored).
    Create {
        /// A unique name: who or what uses the key (recorded with what it does).
        #[arg(long)]
        name: String,
        /// What the key may do (comma-separated): lookup, enrich, ingest, admin.
        #[arg(long)]
        scope: String,
        /// When it stops working: an RFC 3339 time, or a span from now (90d, 12h, 30m). Default: never.
        #[arg(long)]
        expires: Option<String>,
        /// Print the new key as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every key (never its secret): name, first characters, scopes, state.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by name: it stops working within seconds, everywhere.
    Revoke { name: String },
    /// Print a new random key without storing it (for --api-key / IPWHO_API_KEY).
    Generate,
}

/// Whether `ipwho keys` `cmd` needs the database.
pub fn needs_database(cmd: &KeysCommand) -> bool {
    !matches!(cmd, KeysCommand::Generate)
}

/// Runs `ipwho keys` `cmd` (`pool`: when [`needs_database`]).
pub async fn run_keys(pool: Option<&PgPool>, cmd: KeysCommand) -> anyhow::Result<()> {
    let pool = || pool.context("the database is needed");
    match cmd {
        KeysCommand::Create {
            name,
            scope,
            expires,
            json,
        } => {
            let scopes = Scopes::parse(&scope).map_err(|e| anyhow::anyhow!("--scope: {e}"))?;
            let expires = expires
                .map(|e| parse_expiry(&e, chrono::Utc::now()))
                .transpose()?;
            let k = keys::create(pool()?, &name, scopes, expires).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&k)?);
            } else {
                let until = k
                    .expires_at
                    .map(|t| format!(", until {}", t.to_rfc3339()))
                    .unwrap_or_default();
                println!("{}", k.key);
                eprintln!(
                    "key {:?} ({}{until}) created. It is shown only now: keep it. Call with\n  curl -H 'Authorization: Bearer {}' http://127.0.0.1:8080/v1/status",
                    k.name, k.scopes, k.key
                );
            }
        }
        KeysCommand::List { json } => {
            let list = keys::list(pool()?).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no keys (access control is off: serve listens on loopback only)");
            } else {
                for k in list {
                    let expires = k
                        .expires_at
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "never".into());
                    println!(
                        "{}\t{}…\t{}\t{}\tcreated {}\texpires {expires}",
                        k.name,
                        k.prefix,
                        k.scopes,
                        k.state,
                        k.created_at.to_rfc3339()
                    );
                }
            }
        }
        KeysCommand::Revoke { name } => {
            keys::revoke(pool()?, &name).await?;
            println!("key {name:?} revoked");
        }
        KeysCommand::Generate => println!("{}", generate_key()),
    }
    Ok(())
}

/// `serve`'s access flags.
#[derive(Args, Clone, Debug)]
pub struct AccessArgs {
    /// An API key with every scope, beside those of `ipwho keys` (`ipwho keys generate` makes one).
    #[arg(long, env = "IPWHO_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// With no key stored or given, make one with every scope for this run and print it.
    #[arg(long, env = "IPWHO_GENERATE_API_KEY")]
    pub generate_api_key: bool,
    /// Serve a non-loopback address without credentials (anyone who reaches the port may write evidence).
    #[arg(long, env = "IPWHO_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Names the service answers to in the Host header, beside the loopback names and the
    /// --listen address (repeat or comma-separate; `*`: any, behind a proxy that checks it).
    #[arg(
        long = "allowed-host",
        env = "IPWHO_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
}

/// The access control `serve` runs with on `listen`: on when a key is
/// stored or given (or generated, with `--generate-api-key`); off on a
/// loopback address otherwise, and said so; a non-loopback address without
/// credentials is refused unless `--insecure-no-auth`.
pub async fn for_serve(
    pool: &PgPool,
    args: &AccessArgs,
    listen: SocketAddr,
) -> anyhow::Result<Access> {
    let hosts = AllowedHosts::new(Some(listen), &args.allowed_hosts);
    let given = args
        .api_key
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let mut access = Access::load(pool.clone(), given, hosts.clone()).await?;
    if !access.enforced() && args.generate_api_key {
        let key = generate_key();
        access = Access::load(pool.clone(), Some(&key), hosts).await?;
        println!(
            "ipwho: no API key was stored or given; this run's key (every scope) is\n{key}\ncall with: curl -H 'Authorization: Bearer {key}' http://127.0.0.1:8080/v1/status"
        );
        tracing::warn!("generated an API key for this run (printed on standard output)");
    }
    if access.enforced() {
        tracing::info!(
            "access control on: every route but /healthz, /readyz, /docs and /openapi.json needs an API key"
        );
    } else if listen.ip().is_loopback() {
        tracing::warn!(address = %listen, "access control off: no API key stored (`ipwho keys create`) or given (--api-key); serving loopback only");
    } else if args.insecure_no_auth {
        tracing::warn!(address = %listen, "access control OFF on a non-loopback address (--insecure-no-auth): anyone who reaches it may read answers and write evidence");
    } else {
        anyhow::bail!(
            "refusing to listen on {listen} without credentials: anyone who reaches it could write evidence. \
Create a key (`ipwho keys create --name NAME --scope lookup`), give one (--api-key / IPWHO_API_KEY), \
listen on loopback (127.0.0.1), or pass --insecure-no-auth"
        );
    }
    Ok(access)
}
