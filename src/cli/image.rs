//! `skiff image pull|ls|rm|import`: the node's images, through the runtime's socket as crictl
//! does, plus skiff's own image service there for pull progress and archive imports.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use cri_api::ImageServiceClient;
use cri_api::images::images_client::ImagesClient;
use cri_api::v1 as cri;
use tonic::transport::Channel;

/// Options of `skiff image`.
#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    /// The runtime's socket (default: `<data-dir>/runtime/cri.sock`).
    #[arg(long, global = true)]
    runtime_endpoint: Option<PathBuf>,
    /// The data dir `skiff up` runs with.
    #[arg(long, global = true, default_value = "/var/lib/skiff")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ImageCommand {
    /// Pull an image onto the node, showing layers and bytes as they arrive.
    Pull {
        image: String,
        /// Registry credentials, `user:password`.
        #[arg(long)]
        creds: Option<String>,
    },
    /// List the node's images.
    #[command(alias = "list")]
    Ls,
    /// Remove images (by name, id or a unique id prefix) with all their names, as `crictl rmi`
    /// does; layers other images share stay.
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Import the images of an OCI-layout or `docker save` archive (may be gzipped).
    Import {
        file: PathBuf,
        /// The repository for images the archive names only by a tag.
        #[arg(long, default_value = "")]
        base_name: String,
    },
}

async fn channel(socket: &Path) -> Result<Channel> {
    let path = socket.to_path_buf();
    tonic::transport::Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .with_context(|| {
            format!(
                "cannot reach the runtime at {} (is skiff up running?)",
                socket.display()
            )
        })
}

fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", e.message())
}

pub async fn run(args: ImageArgs) -> Result<()> {
    let socket = args
        .runtime_endpoint
        .clone()
        .unwrap_or_else(|| args.data_dir.join("runtime").join("cri.sock"));
    // A wrong file is the user's first problem to hear about, before whether skiff runs.
    let archive = match &args.command {
        ImageCommand::Import { file, .. } => Some(archive_path(file)?),
        _ => None,
    };
    let ch = channel(&socket).await?;
    match args.command {
        ImageCommand::Pull { image, creds } => pull(ch, &image, creds.as_deref()).await,
        ImageCommand::Ls => list(ch).await,
        ImageCommand::Rm { images } => remove(ch, &images).await,
        ImageCommand::Import { file, base_name } => {
            import(ch, &archive.unwrap_or(file), &base_name).await
        }
    }
}

fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

async fn pull(ch: Channel, image: &str, creds: Option<&str>) -> Result<()> {
    let auth = match creds {
        Some(c) => {
            let (username, password) =
                c.split_once(':').context("--creds must be user:password")?;
            Some(cri::AuthConfig {
                username: username.to_owned(),
                password: password.to_owned(),
                ..Default::default()
            })
        }
        None => None,
    };
    let mut images = ImageServiceClient::new(ch.clone());
    let req = cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: image.to_owned(),
            user_specified_image: image.to_owned(),
            ..Default::default()
        }),
        auth,
        sandbox_config: None,
    };
    let mut pulling = Box::pin(images.pull_image(req));
    let mut progress = ImagesClient::new(ch);
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut last = String::new();
    let started = std::time::Instant::now();
    let result = loop {
        tokio::select! {
            r = &mut pulling => break r,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                let req = cri_api::images::PullProgressRequest { image: image.to_owned() };
                let Ok(p) = progress.pull_progress(req).await else { continue };
                let Some(p) = p.into_inner().pulls.into_iter().next() else { continue };
                let line = format!(
                    "{image}: layers {}/{}, {} of {}",
                    p.layers_done,
                    p.layers_total,
                    size(p.bytes_done),
                    size(p.bytes_total)
                );
                if line != last {
                    // On a terminal the line is redrawn; otherwise each change is a line.
                    if tty {
                        eprint!("\r\x1b[2K{line}");
                    } else {
                        eprintln!("{line}");
                    }
                    let _ = std::io::stderr().flush();
                    last = line;
                }
            }
        }
    };
    if tty && !last.is_empty() {
        eprintln!();
    }
    let id = result.map_err(status)?.into_inner().image_ref;
    println!(
        "pulled {image} ({id}) in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn list(ch: Channel) -> Result<()> {
    let mut images = ImageServiceClient::new(ch);
    let mut list = images
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .map_err(status)?
        .into_inner()
        .images;
    list.sort_by(|a, b| a.repo_tags.cmp(&b.repo_tags));
    println!("{:<60} {:<14} {:>10}", "IMAGE", "IMAGE ID", "SIZE");
    for i in list {
        let id = i.id.strip_prefix("sha256:").unwrap_or(&i.id);
        let short = &id[..id.len().min(13)];
        let names = if i.repo_tags.is_empty() {
            vec!["<none>".to_owned()]
        } else {
            i.repo_tags.clone()
        };
        for name in names {
            println!("{name:<60} {short:<14} {:>10}", size(i.size));
        }
    }
    Ok(())
}

async fn remove(ch: Channel, names: &[String]) -> Result<()> {
    let mut images = ImageServiceClient::new(ch);
    let all = images
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .map_err(status)?
        .into_inner()
        .images;
    let mut failed = false;
    for name in names {
        // A name as given, or an id (prefix) as `skiff image ls` shows it.
        let by_id: Vec<&cri::Image> = all
            .iter()
            .filter(|i| {
                let id = i.id.strip_prefix("sha256:").unwrap_or(&i.id);
                name.len() >= 4 && (id.starts_with(name.as_str()) || i.id == *name)
            })
            .collect();
        let target = match by_id.as_slice() {
            [one] => one.id.clone(),
            [] => {
                let req = cri::ImageStatusRequest {
                    image: Some(cri::ImageSpec {
                        image: name.clone(),
                        ..Default::default()
                    }),
                    verbose: false,
                };
                match images
                    .image_status(req)
                    .await
                    .map_err(status)?
                    .into_inner()
                    .image
                {
                    Some(i) => i.id,
                    None => {
                        eprintln!("error: no image {name} on this node");
                        failed = true;
                        continue;
                    }
                }
            }
            _ => {
                eprintln!("error: {name} is the start of more than one image id");
                failed = true;
                continue;
            }
        };
        let req = cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: target.clone(),
                ..Default::default()
            }),
        };
        match images.remove_image(req).await {
            Ok(_) => println!("removed {name} ({target})"),
            Err(e) => {
                eprintln!("error: remove {name}: {}", e.message());
                failed = true;
            }
        }
    }
    if failed {
        bail!("not every image was removed");
    }
    Ok(())
}

const ARCHIVE_KINDS: &str = "an image archive: `docker save`, or skopeo's docker-archive: or oci-archive:, plain or gzipped";

/// The archive to import, as an absolute path (the runtime resolves it, not this process),
/// once it is known to be a readable file that starts as a tar or gzip file does.
fn archive_path(file: &Path) -> Result<PathBuf> {
    use std::io::Read as _;
    let path =
        std::path::absolute(file).with_context(|| format!("cannot resolve {}", file.display()))?;
    match std::fs::metadata(&path) {
        Err(e) => bail!("cannot read {}: {e}", path.display()),
        Ok(m) if !m.is_file() => bail!("{} is not a file ({ARCHIVE_KINDS})", path.display()),
        Ok(_) => {}
    }
    let mut head = Vec::with_capacity(512);
    std::fs::File::open(&path)
        .and_then(|f| f.take(512).read_to_end(&mut head))
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    // A POSIX or GNU tar header has "ustar" at byte 257; gzip starts with 1f 8b.
    let tar = head.get(257..262) == Some(b"ustar".as_slice());
    if !tar && !head.starts_with(&[0x1f, 0x8b]) {
        bail!(
            "{} is not a tar or gzip file ({ARCHIVE_KINDS})",
            path.display()
        );
    }
    Ok(path)
}

async fn import(ch: Channel, path: &Path, base_name: &str) -> Result<()> {
    let mut images = ImagesClient::new(ch);
    let req = cri_api::images::ImportRequest {
        path: path.to_string_lossy().into_owned(),
        base_name: base_name.to_owned(),
    };
    let imported = images
        .import(req)
        .await
        .map_err(status)?
        .into_inner()
        .images;
    for i in imported {
        println!("imported {} ({})", i.repo_tags.join(", "), i.id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::archive_path;

    #[test]
    fn an_archive_that_is_not_a_readable_file_is_named_with_its_cause() {
        let dir = std::env::temp_dir().join(format!("skiff-archive-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.tar");
        assert_eq!(
            archive_path(&missing).unwrap_err().to_string(),
            format!(
                "cannot read {}: No such file or directory (os error 2)",
                missing.display()
            )
        );
        let msg = archive_path(&dir).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!("{} is not a file", dir.display())),
            "{msg}"
        );
        let text = dir.join("hostname");
        std::fs::write(&text, b"vm\n").unwrap();
        let msg = archive_path(&text).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!("{} is not a tar or gzip file (", text.display())),
            "{msg}"
        );
        let mut header = vec![0u8; 512];
        header[257..262].copy_from_slice(b"ustar");
        let tar = dir.join("image.tar");
        std::fs::write(&tar, &header).unwrap();
        assert_eq!(archive_path(&tar).unwrap(), tar);
        let gz = dir.join("image.tar.gz");
        std::fs::write(&gz, [0x1f, 0x8b, 8, 0]).unwrap();
        assert_eq!(archive_path(&gz).unwrap(), gz);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
