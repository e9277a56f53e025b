//! `eddy publish STREAM --type T --data JSON`: publish one event through a running host's API,
//! as any service would over HTTP (a structured-mode CloudEvent).

use anyhow::Context as _;
use clap::Args;

use super::client::{ApiArgs, Client, segment};
use super::{EXIT_OK, OutputFormat};
use crate::api::MAX_EVENT_BODY_BYTES;

/// Arguments of `eddy publish`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    eddy publish orders --type OrderPlaced --data '{\"orderId\":\"o-1\",\"userId\":\"u-1\"}'\n  \
    eddy publish orders --type OrderPlaced --data-file order.json --subject o-1 --host http://10.0.0.5:7070")]
pub struct PublishArgs {
    /// The stream.
    pub stream: String,

    /// The event type.
    #[arg(long = "type", short = 't')]
    pub event_type: String,

    /// The JSON payload.
    #[arg(long, short = 'd', default_value = "{}", conflicts_with = "data_file")]
    pub data: String,

    /// Read the payload from a file (`-` for stdin).
    #[arg(long, value_name = "PATH")]
    pub data_file: Option<std::path::PathBuf>,

    /// The event id (default: a new UUID).
    #[arg(long)]
    pub id: Option<String>,

    /// The event source.
    #[arg(long, default_value = "eddy://cli")]
    pub source: String,

    /// The event subject.
    #[arg(long)]
    pub subject: Option<String>,

    /// Where the host is.
    #[command(flatten)]
    pub api: ApiArgs,

    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
}

/// Runs `eddy publish`.
pub fn run(args: PublishArgs) -> anyhow::Result<u8> {
    let data = match &args.data_file {
        Some(path) if path.as_os_str() == "-" => String::from_utf8(
            crate::inputs::read_capped_from(std::io::stdin(), MAX_EVENT_BODY_BYTES as u64)
                .context("cannot read --data-file from stdin")?,
        )
        .context("--data-file from stdin: expected UTF-8 JSON")?,
        Some(path) => crate::inputs::read_capped_text(path, MAX_EVENT_BODY_BYTES as u64)
            .with_context(|| format!("cannot read --data-file {}", path.display()))?,
        None => args.data.clone(),
    };
    let data: serde_json::Value =
        serde_json::from_str(&data).with_context(|| format!("--data {data:?}: expected JSON"))?;
    let mut event = serde_json::json!({
        "specversion": "1.0",
        "type": args.event_type,
        "source": args.source,
        "id": args.id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        "data": data,
    });
    if let Some(subject) = &args.subject {
        event["subject"] = subject.clone().into();
    }
    let answer = Client::new(&args.api)?.post(
        &format!("/v1/streams/{}/events", segment(&args.stream)),
        "application/cloudevents+json",
        event.to_string().as_bytes(),
    )?;
    match args.output {
        OutputFormat::Json => println!("{answer}"),
        OutputFormat::Human => println!(
            "published {} {} to {} as entry {}",
            args.event_type,
            event["id"].as_str().unwrap_or_default(),
            args.stream,
            answer["ids"][0].as_str().unwrap_or("?")
        ),
    }
    Ok(EXIT_OK)
}
