//! The command line as typed: clap definitions only. Checking and turning
//! these into store paths, hashes and URLs happens in the commands.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Fetch, verify, store and serve model files. Every byte is checked
/// against its BLAKE3 hash; interrupted downloads resume where they stopped.
#[derive(Debug, Parser)]
#[command(name = "p2pmodel", version, about, long_about = None)]
pub struct Cli {
    /// Store folder [default: $P2PMODEL_STORE, else the platform's data folder]
    #[arg(long, global = true, env = "P2PMODEL_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,

    /// Log more (-v: info, -vv: debug); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// The command to run
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add a file, or a folder as a model; prints the hash alone on stdout
    Add {
        /// File or folder to add
        path: PathBuf,
    },
    /// Fetch a blob or model by hash from mirrors, a plain URL, or an hf:// name
    ///
    /// With a hash or an hf:// name, prints the path of the result; with a
    /// URL, prints the hash of its content. Ctrl+C pauses: the next
    /// identical fetch resumes. hf:// names honour HF_ENDPOINT and HF_TOKEN
    /// (the token goes to the Hub only, never to where it redirects).
    Fetch(FetchArgs),
    /// Copy a blob (to a file) or a model (to a folder) out of the store
    Export {
        /// Hash of the blob or model
        hash: String,
        /// Destination file (blob) or folder (model)
        #[arg(short, long)]
        output: PathBuf,
    },
    /// List the blobs and models in the store
    #[command(alias = "ls")]
    List {
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
    /// Remove a blob (complete or partial) from the store
    #[command(alias = "rm")]
    Remove {
        /// Hash of the blob
        hash: String,
    },
    /// Remove partial downloads untouched for a while, and stray files
    Gc {
        /// Age after which a partial download counts as abandoned (e.g. 7d, 12h, 30m, 0)
        #[arg(long, default_value = "7d")]
        older_than: String,
    },
    /// Rehash everything in the store and repair its records
    Verify,
    /// Write a blob or model into a folder that any web server can serve as a mirror
    Publish {
        /// Hash of the blob or model
        hash: String,
        /// Folder to write into
        #[arg(long)]
        dir: PathBuf,
    },
    /// Serve a folder as an HTTP mirror (Range, ETag, If-Range)
    ServeMirror {
        /// Folder to serve
        dir: PathBuf,
        /// Address to listen on
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Pace each response to this many bytes per second (e.g. 50M)
        #[arg(long)]
        rate: Option<String>,
    },
    /// Seed the store to peers: listen, print the peer id and addresses
    /// (also written to STORE/daemon.addrs), serve until Ctrl+C; also runs
    /// the download queue and its control API (STORE/control.addr, token
    /// in STORE/control.token)
    Daemon {
        /// Address to listen on; repeatable
        #[arg(long, default_value = "/ip4/0.0.0.0/tcp/4001")]
        listen: Vec<String>,
        /// Serve peers at most this many bytes per second, all together (e.g. 20M)
        #[arg(long, value_name = "RATE")]
        upload_limit: Option<String>,
        /// Do not find peers on the local network by mDNS (it is on by
        /// default and multicasts on every interface)
        #[arg(long)]
        no_mdns: bool,
        /// Join the DHT through this peer (an address ending in
        /// /p2p/PEER_ID, as a daemon prints it): announce the store's blobs
        /// and find providers of what is fetched; repeatable
        #[arg(long = "bootstrap", value_name = "MULTIADDR")]
        bootstrap: Vec<String>,
        /// The control API and its queue
        #[command(flatten)]
        control: ControlArgs,
    },
    /// Commands that talk to the daemon running on the store
    #[command(flatten)]
    Jobs(JobsCommand),
    /// Show p2pmodel at work on this machine alone: a local mirror serving a
    /// generated model, fetched with a progress bar, paused and resumed
    Demo {
        /// Size of the generated model in MiB
        #[arg(long, default_value_t = 256)]
        size_mib: u64,
        /// Keep the demo's folders instead of deleting them
        #[arg(long)]
        keep: bool,
    },
}

/// Arguments of `fetch`.
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// BLAKE3 hash (64 hex digits) of a blob or model, an http(s) URL, or
    /// hf://ORG/REPO[@REVISION][:QUANT][/PATH]
    pub target: String,
    /// Mirror URL serving the blob (or the model's manifest); repeatable
    #[arg(long = "mirror", value_name = "URL")]
    pub mirrors: Vec<String>,
    /// A peer to fetch from, beside the mirrors (a multiaddr as `p2pmodel
    /// daemon` prints; the /p2p/PEER_ID part may be left out); repeatable
    #[arg(long = "peer", value_name = "MULTIADDR")]
    pub peers: Vec<String>,
    /// Find peers holding the hash through the DHT, joined through this
    /// peer (an address ending in /p2p/PEER_ID, as a daemon prints it);
    /// repeatable. A daemon running on the store uses its own
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    pub bootstrap: Vec<String>,
    /// Also listen here while fetching, serving verified chunks to other
    /// peers (e.g. /ip4/0.0.0.0/tcp/0); repeatable
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<String>,
    /// While fetching, serve peers at most this many bytes per second (e.g. 20M)
    #[arg(long, value_name = "RATE")]
    pub upload_limit: Option<String>,
    /// Also find peers on the local network by mDNS (multicasts on every
    /// interface)
    #[arg(long)]
    pub mdns: bool,
    /// Where to put the result: a file for a blob, a folder for a model
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// With a URL: the SHA-256 its content must have
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// Print progress and the result as JSON lines on stdout
    #[arg(long)]
    pub json: bool,
    /// Requests in flight per mirror
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// With hf://: the GGUF quantization to take (e.g. Q4_K_M), like
    /// hf://ORG/REPO:QUANT [default: the first present of Q4_K_M, Q4_K_S,
    /// Q5_K_M, ... F16, BF16, F32, or the only one]
    #[arg(long, value_name = "QUANT")]
    pub quant: Option<String>,
    /// With hf://: take only files whose path matches GLOB (`*` crosses
    /// folders; any case); repeatable
    #[arg(long = "include", value_name = "GLOB")]
    pub include: Vec<String>,
    /// With hf://: also write the files into a Hugging Face cache, for
    /// tools that read it offline [default DIR: $HF_HUB_CACHE, else
    /// $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
    /// ~/.cache/huggingface/hub]
    #[arg(long, value_name = "DIR", num_args = 0..=1, require_equals = true)]
    pub hf_cache: Option<Option<PathBuf>>,
}

/// Flags of `daemon` for its control API and queue.
#[derive(Debug, clap::Args)]
pub struct ControlArgs {
    /// Address of the control API (its port is written to STORE/control.addr)
    #[arg(long, default_value = "127.0.0.1:0", value_name = "IP:PORT")]
    pub control_listen: std::net::SocketAddr,
    /// Allow the control API on an address other than loopback (anyone who
    /// reaches it with the token controls the daemon; the token travels in
    /// clear HTTP)
    #[arg(long)]
    pub control_allow_remote: bool,
    /// Jobs whose transfers run at once
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub max_concurrent_jobs: usize,
    /// Jobs that may wait in the queue; more are refused
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_queued_jobs: usize,
}

/// Subcommands of `queue`.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Move a queued job to POSITION (1 starts next); prints the position taken
    Move {
        /// Job id
        id: String,
        /// New position, from 1
        position: u64,
    },
    /// Forget a job that is not running
    Remove {
        /// Job id
        id: String,
    },
    /// Forget every failed job
    ClearFailed,
    /// Pause every queued and running job
    CancelAll,
    /// Pause the queued and running jobs of a group
    CancelGroup {
        /// Group name
        name: String,
    },
    /// Start queued jobs from now on
    Start,
    /// Print running and waiting jobs, and the limits
    Counts {
        /// As JSON
        #[arg(long)]
        json: bool,
    },
    /// Change the limits
    Limits {
        /// Jobs that may wait
        #[arg(long, value_name = "N")]
        max_queued: Option<usize>,
        /// Jobs that run at once
        #[arg(long, value_name = "N")]
        max_concurrent: Option<usize>,
    },
}

/// Commands that talk to the daemon on the same store, through its control API.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List the daemon's jobs: queued (in order), running, paused, done, failed
    #[command(name = "jobs")]
    List {
        /// Print the daemon's JSON snapshot
        #[arg(long)]
        json: bool,
    },
    /// Show one of the daemon's jobs, as JSON
    Job {
        /// Job id (as `p2pmodel jobs` prints it)
        id: String,
    },
    /// Cancel one of the daemon's jobs: a pause that keeps its partial download
    Cancel {
        /// Job id
        id: String,
        /// Also discard the partial download
        #[arg(long)]
        clear: bool,
    },
    /// Queue a paused, failed or cancelled job of the daemon again
    Retry {
        /// Job id
        id: String,
    },
    /// Manage the daemon's queue
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Suspend the daemon's node: connections close, transfers wait
    Suspend,
    /// Resume the daemon's node: transfers continue, queued jobs start
    Resume,
    /// Print the daemon's node state (active, suspending, suspended, resuming)
    State,
}
