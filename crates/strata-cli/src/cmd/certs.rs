//! `strata certs`: a CA, a server certificate and client certificates for a local deployment.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Directory to write ca.pem/.key, server.pem/.key and client-<i>.pem/.key into (keys are
    /// 0600; existing files are never overwritten).
    #[arg(long)]
    out: PathBuf,
    /// A DNS name or IP address clients use to reach the server; repeat for several
    /// (default: localhost and 127.0.0.1).
    #[arg(long = "server-name", value_name = "NAME")]
    server_names: Vec<String>,
    /// Client certificates to make, for a server with --tls-client-ca.
    #[arg(long, default_value_t = 0)]
    clients: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let names = if args.server_names.is_empty() {
        strata_security::certs::DEFAULT_SERVER_NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        args.server_names
    };
    let pki = strata_security::certs::generate(&names, args.clients)?;
    let written = pki.write(&args.out)?;
    for path in &written {
        println!("{}", path.display());
    }
    let dir = args.out.display();
    eprintln!(
        "\nServer certificate for {}. Next:\n  strata server --tls-cert {dir}/server.pem --tls-key {dir}/server.key{} ...\n  \
         strata client --server https://{}:50051 --tls-ca {dir}/ca.pem{} ...\n\
         Keep ca.key offline if you can: whoever has it can make certificates this deployment trusts.",
        names.join(", "),
        if args.clients > 0 { format!(" --tls-client-ca {dir}/ca.pem") } else { String::new() },
        names[0],
        if args.clients > 0 {
            format!(" --tls-cert {dir}/client-0.pem --tls-key {dir}/client-0.key")
        } else {
            String::new()
        },
    );
    Ok(())
}
