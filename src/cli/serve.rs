//! `neurodex serve [--db F] [--model M] [--addr 127.0.0.1:7878]`: the live explorer in
//! the browser (webcam, video files, pictures, indexed images).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use neurodex::model::{Network, DEFAULT_MODEL};
use neurodex::serve::{self, App};
use neurodex::store::Store;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Index database: enables the top images of a clicked unit and the dataset picker
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Architecture (default: the database's, else efficientnet-lite0)
    #[arg(long)]
    pub model: Option<String>,
    /// Weights file (default: the embedded weights)
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Address to listen on; the default is reachable from this machine only
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub addr: SocketAddr,
    /// Also answer requests that name this host (repeatable): a LAN name or a
    /// reverse proxy's. Loopback names and IP addresses are always answered; other
    /// names are refused, so that a web page cannot reach the server by DNS rebinding
    #[arg(long, value_name = "NAME")]
    pub allow_host: Vec<String>,
    /// Connections served at once (default: from the open-file limit)
    #[arg(long, hide = true)]
    pub max_connections: Option<usize>,
    /// Largest accepted upload or frame, in MiB
    #[arg(long, default_value_t = 16)]
    pub max_upload_mb: usize,
    /// Class names, one per line in output order (default: ImageNet-1k's for 1000
    /// outputs)
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    #[command(flatten)]
    pub recipe: super::RecipeArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let model = match (&args.model, &args.db) {
        (Some(m), _) => m.clone(),
        (None, Some(db)) => Store::open_readonly(db)?.run_info()?.model,
        (None, None) => DEFAULT_MODEL.to_string(),
    };
    let mut net = Network::open(&model, args.weights.as_deref())?;
    super::set_labels(&mut net, args.labels.as_deref())?;
    if let Some(db) = &args.db {
        let run = Store::open_readonly(db)?.run_info()?;
        // Frames are prepared as the indexed images were, unless told otherwise.
        if run.model == net.arch.name {
            if let Some(r) = run.parsed_recipe() {
                net.arch.recipe = r;
            }
        }
        if run.model == net.arch.name && run.weights_id != net.weights_id() {
            eprintln!(
                "warning: {} was indexed with other weights than these; live maps and the \
                 indexed top images may not agree",
                db.display()
            );
        }
    }
    net.arch.recipe = args.recipe.recipe(&net.arch.recipe)?;
    let mut app = App::new(net, args.db)?;
    app.max_upload = args.max_upload_mb.max(1) << 20;
    app.hosts = serve::HostRules::new(&args.allow_host);
    app.max_connections = args.max_connections;
    serve::serve(app, args.addr)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: super::Args,
    }

    #[test]
    fn listens_on_localhost_unless_told_otherwise() {
        let a = Cli::parse_from(["x"]).args;
        assert!(a.addr.ip().is_loopback());
        assert_eq!(a.addr.to_string(), "127.0.0.1:7878");
        let b = Cli::parse_from(["x", "--addr", "0.0.0.0:80"]).args;
        assert!(!b.addr.ip().is_loopback());
    }
}
