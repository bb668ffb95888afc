//! Container images built without a Docker daemon, from binaries this machine already has.
//!
//! An image here is one layer: a root filesystem assembled in a temporary directory from an
//! [`ImageSpec`] (the listed files, the shared libraries they need, a minimal `/etc`), turned into
//! an OCI image by [umoci](https://github.com/opencontainers/umoci) (`infra/install.sh` builds it)
//! and written as a tar of an OCI image layout holding exactly that one image, tagged with the
//! spec's tag. containerd imports such an archive under its full name with
//!
//! ```text
//! ctr -n k8s.io images import --base-name <ImageSpec::base_name> <archive.tar>
//! ```
//!
//! (its importer prefixes the tag-only `org.opencontainers.image.ref.name` of each manifest in
//! `index.json` with the base name). `docs/images.md` has the whole story: names, tags, the
//! contract every image keeps (non-root, entrypoint, env, ports) and why umoci.
//!
//! | image | made by | from |
//! | --- | --- | --- |
//! | `ghcr.io/ftgo-rs/<bin>:<tag>` | [`workspace_binary`] | a binary of this workspace, as the `Dockerfile` would |
//! | `ftgo.local/postgres:15` | [`postgres`] | the host's Debian PostgreSQL and `infra/images/postgres-entrypoint.sh` |
//! | `ftgo.local/nats:<v>`, `consul:<v>`, `fabio:<v>` | [`nats`], [`consul`], [`fabio`] | the binaries `infra/install.sh` caches |
//! | `ftgo.local/pause:<v>` | [`pause`] | `infra/pause.c`, static |
//!
//! [`build`] skips an image whose archive is up to date (see [`build`] for what "up to date" means).

use std::{
    collections::HashSet,
    fs,
    io::Read,
    os::unix::fs::{PermissionsExt, symlink},
    path::{Component, Path, PathBuf},
    process::Command,
    time::{Duration, Instant, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};

use crate::host;

/// The registry of FTGO's own images, the same names `Dockerfile` documents and the Helm chart
/// and the operator use.
pub const WORKSPACE_REGISTRY: &str = "ghcr.io/ftgo-rs";

/// The registry of the infrastructure images built here. It exists nowhere: these images only ever
/// reach a cluster by import, so a pull of one fails loudly instead of fetching something else.
pub const INFRASTRUCTURE_REGISTRY: &str = "ftgo.local";

/// The unprivileged user every image runs as (the distroless "nonroot" uid). `/etc/passwd` names
/// it `ftgo`, home `/nonexistent`.
pub const NONROOT_USER: &str = "65532:65532";

/// Where a workspace binary lives in its image, and the image's entrypoint (as in `Dockerfile`).
pub const WORKSPACE_BINARY_PATH: &str = "/usr/local/bin/ftgo";

/// `PATH` of every image: Debian's default, which the `Dockerfile`'s `debian:bookworm-slim` base
/// sets too.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where the Postgres image's entrypoint script lives in the image.
pub const POSTGRES_ENTRYPOINT: &str = "/usr/local/bin/postgres-entrypoint.sh";

/// Bumped whenever the way an image is assembled changes, so archives built by older code are
/// rebuilt rather than reused (it is part of every content key).
const BUILDER_REVISION: &str = "ftgo-testenv images 2";

/// What goes into one image, and how it runs.
///
/// Every image gets, besides [`files`](Self::files):
/// - for every dynamically linked ELF file among them, the shared libraries `ldd` names and the
///   dynamic loader, at the same absolute paths as on the host, with the host's symlinks (so
///   `/lib64/ld-linux-x86-64.so.2` resolves in the image as it does here);
/// - `/etc/passwd` and `/etc/group` with `root` and `ftgo` (65532:65532, home `/nonexistent`),
///   and an `/etc/nsswitch.conf` that reads them and `/etc/hosts` before DNS;
/// - `/etc/ssl/certs/ca-certificates.crt` from the host, if it has one;
/// - `/tmp` with mode 1777, and [`writable_dirs`](Self::writable_dirs) likewise.
///
/// Everything is owned by root and readable by everyone; executables have mode 0755, other files
/// 0644, directories 0755. The user the image runs as can write only to the 1777 directories (and
/// to the volumes a pod mounts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSpec {
    /// The full image reference with a tag, e.g. `ghcr.io/ftgo-rs/order-service:0.1.0`.
    pub reference: String,
    /// `(host source, absolute path in the image)`. A source copied to its own path keeps its
    /// symlinks, whose targets are added too (a directory is copied whole); a source copied to
    /// another path is copied with symlinks followed.
    pub files: Vec<(PathBuf, String)>,
    /// The image's `Entrypoint`; its first element is made executable whatever its source's mode.
    pub entrypoint: Vec<String>,
    /// The image's `Cmd`: default arguments, replaced by a pod's `args`.
    pub cmd: Vec<String>,
    /// The image's `User`, `uid:gid` (numeric, so no lookup is needed to start it).
    pub user: String,
    /// The image's `Env`, in order.
    pub env: Vec<(String, String)>,
    /// TCP ports the image's `ExposedPorts` documents.
    pub exposed_ports: Vec<u16>,
    /// The image's `WorkingDir`; `None` leaves the runtime's default, `/`.
    pub workdir: Option<String>,
    /// Empty directories with mode 1777, like `/tmp`, where the unprivileged user keeps state when
    /// no volume is mounted there (Postgres's socket directory, for instance).
    pub writable_dirs: Vec<String>,
    /// Host paths (files or whole directories) left out of the sources copied to their own path,
    /// and not searched for libraries: what an image does not need and would only make it bigger.
    pub exclude: Vec<PathBuf>,
}

impl ImageSpec {
    /// The reference without its tag: `ghcr.io/ftgo-rs/order-service`, the `--base-name` to give
    /// `ctr images import`.
    pub fn base_name(&self) -> &str {
        self.split_reference().0
    }

    /// The reference's tag: `0.1.0`, the `org.opencontainers.image.ref.name` of the archive's one
    /// image. A reference without a tag has the tag `latest`, as everywhere else.
    pub fn tag(&self) -> &str {
        self.split_reference().1.unwrap_or("latest")
    }

    /// The file name of the image's archive: the reference with every character but
    /// `[A-Za-z0-9._-]` replaced by `_`, plus `.tar` (`ftgo.local_postgres_15.tar`).
    pub fn archive_name(&self) -> String {
        let name: String = self
            .reference
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
            .collect();
        format!("{name}.tar")
    }

    fn split_reference(&self) -> (&str, Option<&str>) {
        let last_slash = self.reference.rfind('/').map_or(0, |i| i + 1);
        match self.reference[last_slash..].rfind(':') {
            Some(i) => (&self.reference[..last_slash + i], Some(&self.reference[last_slash + i + 1..])),
            None => (&self.reference, None),
        }
    }

    fn validate(&self) -> Result<()> {
        let (base, tag) = self.split_reference();
        ensure!(
            !self.reference.contains('@'),
            "image reference {:?} has a digest: give it a tag instead",
            self.reference
        );
        ensure!(!base.is_empty(), "image reference {:?} has no name", self.reference);
        let tag = tag.with_context(|| format!("image reference {:?} has no tag", self.reference))?;
        ensure!(
            !tag.is_empty() && tag.len() <= 128 && tag.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
            "image reference {:?} has an invalid tag",
            self.reference
        );
        ensure!(!self.entrypoint.is_empty() || !self.cmd.is_empty(), "image {} runs nothing", self.reference);
        ensure!(
            self.user.split_once(':').is_some_and(|(u, g)| u.parse::<u32>().is_ok() && g.parse::<u32>().is_ok()),
            "image {}: user {:?} is not numeric uid:gid",
            self.reference,
            self.user
        );
        for (source, target) in &self.files {
            ensure!(source.is_absolute(), "image {}: source {} is not absolute", self.reference, source.display());
            ensure!(target.starts_with('/'), "image {}: path {target:?} in the image is not absolute", self.reference);
        }
        for dir in self.writable_dirs.iter().chain(&self.workdir) {
            ensure!(dir.starts_with('/'), "image {}: {dir:?} is not absolute", self.reference);
        }
        Ok(())
    }
}

/// The image of one workspace binary, with the contract of the repository's `Dockerfile` (its final
/// stage): `ghcr.io/ftgo-rs/<bin>:<tag>`, the binary at `/usr/local/bin/ftgo` as the entrypoint,
/// no default arguments, user 65532:65532, Debian's default `PATH` and the CA certificates.
/// `binary_path` is the built binary, e.g. `target/release/order-service`.
pub fn workspace_binary(bin: &str, binary_path: &Path, tag: &str) -> ImageSpec {
    ImageSpec {
        reference: format!("{WORKSPACE_REGISTRY}/{bin}:{tag}"),
        files: vec![(binary_path.to_owned(), WORKSPACE_BINARY_PATH.to_owned())],
        entrypoint: vec![WORKSPACE_BINARY_PATH.to_owned()],
        user: NONROOT_USER.to_owned(),
        env: vec![("PATH".to_owned(), DEFAULT_PATH.to_owned())],
        ..ImageSpec::default()
    }
}

/// The infrastructure images of the operator's `Managed` mode: [`postgres`], [`nats`],
/// [`consul`] and [`fabio`], in that order.
pub fn infrastructure() -> Result<Vec<ImageSpec>> {
    Ok(vec![postgres()?, nats()?, consul()?, fabio()?])
}

/// Debian's `C.UTF-8` locale (glibc's, in `libc-bin`): a collation Postgres can offer.
const C_UTF8_LOCALE: &str = "/usr/lib/locale/C.utf8";

/// `ftgo.local/postgres:<POSTGRES_MAJOR>`: the host's Debian PostgreSQL (`/usr/lib/postgresql/<major>`
/// and `/usr/share/postgresql/<major>` whole, less the LLVM JIT, which would add ~160 MB for
/// `libLLVM` and its bitcode; without it Postgres simply does not JIT), the system time zone data
/// Debian's build reads, `/bin/sh` (dash) and `rm` for the entrypoint,
/// `infra/images/postgres-entrypoint.sh`, and `locale` with the `C.UTF-8` locale for initdb.
///
/// The entrypoint speaks the official image's language (`POSTGRES_USER`, `POSTGRES_PASSWORD`,
/// `POSTGRES_HOST_AUTH_METHOD`, `PGDATA`, default `/var/lib/postgresql/data`), initialises the
/// cluster on first start and runs `postgres -c listen_addresses='*'` plus the container's args.
/// `PATH` starts with Postgres's `bin`, so the operator's `pg_isready -U postgres` probe works; it
/// finds the server's socket in `/var/run/postgresql`, Debian's compiled-in default.
pub fn postgres() -> Result<ImageSpec> {
    let major = pinned_version("POSTGRES_MAJOR")?;
    let lib = PathBuf::from(format!("/usr/lib/postgresql/{major}"));
    let share = PathBuf::from(format!("/usr/share/postgresql/{major}"));
    let bin = lib.join("bin");
    let postgres = bin.join("postgres");
    ensure!(
        postgres.is_file() && share.is_dir(),
        "PostgreSQL {major} is not installed in {} and {}: run `just infra`",
        lib.display(),
        share.display()
    );
    check_version(&postgres, &["--version"], &format!("(PostgreSQL) {major}."))?;
    let script = repository_root().join("infra/images/postgres-entrypoint.sh");
    ensure!(script.is_file(), "{} is missing", script.display());
    let same_path = |p: &Path| (p.to_owned(), p.to_string_lossy().into_owned());
    let mut files = vec![
        same_path(&lib),
        same_path(&share),
        same_path(Path::new("/usr/share/zoneinfo")),
        same_path(Path::new("/bin/sh")),
        same_path(Path::new("/usr/bin/rm")),
        // initdb asks `locale -a` for the collations to import; with C.UTF-8 there is one.
        same_path(Path::new("/usr/bin/locale")),
        (script, POSTGRES_ENTRYPOINT.to_owned()),
    ];
    if Path::new(C_UTF8_LOCALE).is_dir() {
        files.push(same_path(Path::new(C_UTF8_LOCALE)));
    }
    Ok(ImageSpec {
        reference: format!("{INFRASTRUCTURE_REGISTRY}/postgres:{major}"),
        files,
        entrypoint: vec![POSTGRES_ENTRYPOINT.to_owned()],
        user: NONROOT_USER.to_owned(),
        env: vec![
            ("PATH".to_owned(), format!("{}:{DEFAULT_PATH}", bin.display())),
            ("PGDATA".to_owned(), "/var/lib/postgresql/data".to_owned()),
        ],
        exposed_ports: vec![5432],
        writable_dirs: vec!["/var/lib/postgresql".to_owned(), "/var/run/postgresql".to_owned()],
        exclude: vec![
            lib.join("lib/llvmjit.so"),
            lib.join("lib/llvmjit_types.bc"),
            lib.join("lib/bitcode"),
            // The host's own time zone (a link to /etc/localtime): an image has none, Postgres
            // then uses UTC.
            "/usr/share/zoneinfo/localtime".into(),
        ],
        ..ImageSpec::default()
    })
}

/// `ftgo.local/nats:<NATS_VERSION>`: `nats-server` as the entrypoint, by default with JetStream
/// storing in `/data` and monitoring on 8222 (the operator passes the same as `args`).
pub fn nats() -> Result<ImageSpec> {
    let (version, binary) = pinned_binary("nats-server", "NATS_VERSION", &["--version"], "v")?;
    Ok(ImageSpec {
        cmd: owned(&["--jetstream", "--store_dir", "/data", "--http_port", "8222"]),
        exposed_ports: vec![4222, 8222],
        writable_dirs: owned(&["/data"]),
        ..server_image("nats", &version, binary, "/usr/local/bin/nats-server")
    })
}

/// `ftgo.local/consul:<CONSUL_VERSION>`: `consul` as the entrypoint, by default a dev agent
/// listening on every address with its data in `/consul/data`.
pub fn consul() -> Result<ImageSpec> {
    let (version, binary) = pinned_binary("consul", "CONSUL_VERSION", &["version"], "v")?;
    Ok(ImageSpec {
        cmd: owned(&["agent", "-dev", "-client", "0.0.0.0", "-data-dir", "/consul/data"]),
        exposed_ports: vec![8500],
        writable_dirs: owned(&["/consul/data"]),
        ..server_image("consul", &version, binary, "/usr/local/bin/consul")
    })
}

/// `ftgo.local/fabio:<FABIO_VERSION>`: `fabio` as the entrypoint, no default arguments (the
/// operator passes the Consul address and the listeners).
pub fn fabio() -> Result<ImageSpec> {
    let (version, binary) = pinned_binary("fabio", "FABIO_VERSION", &["-v"], "")?;
    Ok(ImageSpec {
        exposed_ports: vec![9999, 9997, 9998],
        ..server_image("fabio", &version, binary, "/usr/local/bin/fabio")
    })
}

/// `ftgo.local/pause:<PAUSE_VERSION>`: the pod sandbox image for containerd's `sandbox_image`,
/// the static `infra/pause.c` at `/pause`, user 65535:65535 as is customary for pause images.
pub fn pause() -> Result<ImageSpec> {
    let (version, binary) = pinned_binary("pause", "PAUSE_VERSION", &["-v"], "ftgo-pause ")?;
    Ok(ImageSpec {
        reference: format!("{INFRASTRUCTURE_REGISTRY}/pause:{version}"),
        files: vec![(binary, "/pause".to_owned())],
        entrypoint: vec!["/pause".to_owned()],
        user: "65535:65535".to_owned(),
        env: vec![("PATH".to_owned(), DEFAULT_PATH.to_owned())],
        ..ImageSpec::default()
    })
}

/// `ftgo.local/<name>:<version>`: one server binary at `path` as the entrypoint, run as
/// [`NONROOT_USER`] with Debian's `PATH`; no default arguments, ports or writable directories.
fn server_image(name: &str, version: &str, binary: PathBuf, path: &str) -> ImageSpec {
    ImageSpec {
        reference: format!("{INFRASTRUCTURE_REGISTRY}/{name}:{version}"),
        files: vec![(binary, path.to_owned())],
        entrypoint: vec![path.to_owned()],
        user: NONROOT_USER.to_owned(),
        env: vec![("PATH".to_owned(), DEFAULT_PATH.to_owned())],
        ..ImageSpec::default()
    }
}

fn owned(strings: &[&str]) -> Vec<String> {
    strings.iter().map(|s| (*s).to_owned()).collect()
}

/// The repository this crate is part of.
fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("testenv lives in the repository").to_owned()
}

/// A version pinned in `infra/install.sh`, the one place versions are bumped: the value of its
/// `VARIABLE=value` line (`pinned_version("NATS_VERSION")` is `2.12.8`, say).
pub fn pinned_version(variable: &str) -> Result<String> {
    let install_sh = repository_root().join("infra/install.sh");
    let text = fs::read_to_string(&install_sh).with_context(|| format!("reading {}", install_sh.display()))?;
    text.lines()
        .find_map(|line| line.strip_prefix(variable)?.strip_prefix('='))
        .and_then(|value| value.split_whitespace().next())
        .map(|value| value.trim_matches(|c| c == '"' || c == '\'').to_owned())
        .filter(|value| !value.is_empty())
        .with_context(|| format!("{} has no `{variable}=` line", install_sh.display()))
}

/// The version `infra/install.sh` pins in `variable`, and the installed `binary` (see
/// [`host::binary`]), checked to report it: `binary version_args...` must print
/// `<reported_prefix><version>`.
fn pinned_binary(
    binary: &str,
    variable: &str,
    version_args: &[&str],
    reported_prefix: &str,
) -> Result<(String, PathBuf)> {
    let version = pinned_version(variable)?;
    let path = host::binary(binary)?;
    check_version(&path, version_args, &format!("{reported_prefix}{version}"))?;
    Ok((version, path))
}

/// Fails unless `binary args...` prints `expected`: the image's tag must be the version inside it.
fn check_version(binary: &Path, args: &[&str], expected: &str) -> Result<()> {
    let out = Command::new(binary).args(args).output().with_context(|| format!("running {}", binary.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(
        text.contains(expected),
        "{} {} does not report {expected:?} (infra/install.sh pins it; run `just infra`): {}",
        binary.display(),
        args.join(" "),
        text.trim()
    );
    Ok(())
}

/// umoci, as `infra/install.sh` installs it (see [`host::binary`]).
pub fn umoci() -> Result<PathBuf> {
    host::binary("umoci")
}

/// Builds `spec` into `<out_dir>/<spec.archive_name()>`, a tar of an OCI image layout (`oci-layout`,
/// `index.json`, `blobs/` at its root) holding exactly one linux image of this machine's
/// architecture, tagged [`ImageSpec::tag`]; returns the archive's path.
///
/// An archive is up to date when its sidecar `<archive>.key` holds the build's content key: a
/// SHA-256 over the spec, the umoci binary, whether we are root, and the path, size, mode and
/// modification time of every source file (directories walked). The libraries `ldd` adds are not
/// part of it: a host library upgrade alone does not rebuild an image (delete the archive to).
pub fn build(spec: &ImageSpec, out_dir: &Path) -> Result<PathBuf> {
    build_one(spec, out_dir).map(|built| built.archive)
}

/// [`build`] for each of `specs`, in order, printing one line per image to stderr: its reference,
/// the archive's size, the time taken and whether it was built or already up to date.
pub fn build_all(specs: &[ImageSpec], out_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut archives = Vec::with_capacity(specs.len());
    for spec in specs {
        let started = Instant::now();
        let built = build_one(spec, out_dir).with_context(|| format!("building image {}", spec.reference))?;
        let size = fs::metadata(&built.archive)?.len();
        eprintln!(
            "image {:<45} {:>9} {:>7.1}s  {}",
            spec.reference,
            human_size(size),
            started.elapsed().as_secs_f64(),
            if built.fresh { "built" } else { "up to date" }
        );
        archives.push(built.archive);
    }
    Ok(archives)
}

struct Built {
    archive: PathBuf,
    /// `false` when the archive was already up to date.
    fresh: bool,
}

fn build_one(spec: &ImageSpec, out_dir: &Path) -> Result<Built> {
    spec.validate()?;
    let umoci = umoci()?;
    fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let archive = out_dir.join(spec.archive_name());
    let key_file = out_dir.join(format!("{}.key", spec.archive_name()));
    let rootless = !is_root();
    let key = content_key(spec, &umoci, rootless)?;
    if archive.is_file() && fs::read_to_string(&key_file).is_ok_and(|old| old.trim() == key) {
        tracing::debug!(image = %spec.reference, archive = %archive.display(), "up to date");
        return Ok(Built { archive, fresh: false });
    }
    let _ = fs::remove_file(&key_file);

    let work = tempfile::Builder::new()
        .prefix(&format!(".build-{}-", spec.archive_name()))
        .tempdir_in(out_dir)
        .with_context(|| format!("creating a build directory in {}", out_dir.display()))?;
    let rootfs = work.path().join("rootfs");
    let files = assemble(spec, &rootfs)?;
    let layout = work.path().join("layout");
    ensure!(!layout.to_string_lossy().contains(':'), "{}: umoci cannot use a path with ':'", layout.display());
    let image = format!("{}:{}", layout.display(), spec.tag());
    let image = image.as_str();

    run(Command::new(&umoci).arg("init").arg("--layout").arg(&layout))?;
    run(Command::new(&umoci).args(["new", "--image", image]))?;
    let mut insert = Command::new(&umoci);
    insert.args(["insert", "--image", image]);
    if rootless {
        // Maps us to root in the layer: the files are root's in the image either way.
        insert.arg("--rootless");
    }
    insert.arg("--history.created_by").arg(format!("ftgo-testenv images::build ({files} files)")).arg(&rootfs).arg("/");
    run(&mut insert)?;
    let mut config = Command::new(&umoci);
    config.args(["config", "--image", image, "--no-history", "--os", "linux", "--architecture", goarch()?]);
    config.arg("--config.user").arg(&spec.user);
    for arg in &spec.entrypoint {
        config.arg("--config.entrypoint").arg(arg);
    }
    for arg in &spec.cmd {
        config.arg("--config.cmd").arg(arg);
    }
    for (name, value) in &spec.env {
        config.arg("--config.env").arg(format!("{name}={value}"));
    }
    for port in &spec.exposed_ports {
        config.arg("--config.exposedports").arg(format!("{port}/tcp"));
    }
    if let Some(dir) = &spec.workdir {
        config.arg("--config.workingdir").arg(dir);
    }
    run(&mut config)?;
    // `insert` and `config` each leave the replaced manifest and config behind.
    run(Command::new(&umoci).arg("gc").arg("--layout").arg(&layout))?;
    name_the_image(&layout, &spec.reference)?;

    // Written inside this build's own directory, then renamed into place: two builds of the same
    // image at once (two tests, say) never write into each other's archive.
    let partial = work.path().join("archive.tar");
    run(Command::new("tar").arg("--create").arg("--file").arg(&partial).arg("--directory").arg(&layout).args([
        "--sort=name",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "oci-layout",
        "index.json",
        "blobs",
    ]))?;
    fs::rename(&partial, &archive).with_context(|| format!("moving the archive to {}", archive.display()))?;
    fs::write(&key_file, format!("{key}\n")).with_context(|| format!("writing {}", key_file.display()))?;
    tracing::debug!(image = %spec.reference, archive = %archive.display(), files, "built");
    Ok(Built { archive, fresh: true })
}

/// Adds the full reference to the index as `io.containerd.image.name`, next to umoci's tag-only
/// `org.opencontainers.image.ref.name`, as `ctr images export` writes it: an importer given no base
/// name (`kind load image-archive`, a plain `ctr images import`) then names the image in full.
fn name_the_image(layout: &Path, reference: &str) -> Result<()> {
    let path = layout.join("index.json");
    let mut index: serde_json::Value = serde_json::from_slice(&fs::read(&path)?)?;
    let manifests = index["manifests"].as_array_mut().context("index.json has no manifests")?;
    for manifest in manifests {
        manifest["annotations"]["io.containerd.image.name"] = reference.into();
    }
    fs::write(&path, serde_json::to_vec(&index)?)?;
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The OCI name of this machine's architecture: the binaries copied in are this machine's.
fn goarch() -> Result<&'static str> {
    Ok(match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => bail!("no OCI architecture name known for {other}"),
    })
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(out.status.success(), "{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1 << 20)),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / f64::from(1 << 10)),
        b => format!("{b} B"),
    }
}

fn content_key(spec: &ImageSpec, umoci: &Path, rootless: bool) -> Result<String> {
    let mut hasher = Sha256::new();
    hasher.update(format!("{BUILDER_REVISION}\n{spec:?}\nrootless={rootless}\n"));
    fingerprint(umoci, &[], &mut hasher)?;
    for (source, _) in &spec.files {
        fingerprint(source, &spec.exclude, &mut hasher)?;
    }
    if let Ok(meta) = fs::metadata(CA_CERTIFICATES) {
        hasher.update(stat_line(Path::new(CA_CERTIFICATES), &meta));
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Hashes `path`'s metadata (following a symlink) and, for a directory, its entries' (symlinks
/// inside it by their target text, not followed).
fn fingerprint(path: &Path, exclude: &[PathBuf], hasher: &mut Sha256) -> Result<()> {
    if exclude.iter().any(|ex| path.starts_with(ex)) {
        return Ok(());
    }
    let meta = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    hasher.update(stat_line(path, &meta));
    if meta.is_dir() {
        let mut entries = fs::read_dir(path)?.map(|e| e.map(|e| e.path())).collect::<Result<Vec<_>, _>>()?;
        entries.sort();
        for entry in entries {
            if exclude.iter().any(|ex| entry.starts_with(ex)) {
                continue;
            }
            let lmeta = fs::symlink_metadata(&entry)?;
            if lmeta.file_type().is_symlink() {
                hasher.update(format!("{} -> {}\n", entry.display(), fs::read_link(&entry)?.display()));
            } else {
                fingerprint(&entry, exclude, hasher)?;
            }
        }
    }
    Ok(())
}

fn stat_line(path: &Path, meta: &fs::Metadata) -> String {
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).unwrap_or(Duration::ZERO);
    format!("{} {} {:o} {}\n", path.display(), meta.len(), meta.permissions().mode(), mtime.as_nanos())
}

const CA_CERTIFICATES: &str = "/etc/ssl/certs/ca-certificates.crt";

const PASSWD: &str = "root:x:0:0:root:/root:/sbin/nologin\nftgo:x:65532:65532:ftgo:/nonexistent:/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nftgo:x:65532:\n";
const NSSWITCH: &str = "passwd: files\ngroup: files\nhosts: files dns\n";

/// Assembles the root filesystem of `spec` in `root` (created); returns how many files it holds.
fn assemble(spec: &ImageSpec, root: &Path) -> Result<usize> {
    let mut rootfs = Rootfs { root: root.to_owned(), exclude: spec.exclude.clone(), ..Rootfs::default() };
    fs::create_dir(root)?;
    fs::set_permissions(root, fs::Permissions::from_mode(0o755))?;
    for (source, target) in &spec.files {
        if source == Path::new(target) {
            rootfs.add_host(source, true).with_context(|| format!("adding {}", source.display()))?;
        } else {
            rootfs
                .add_as(source, Path::new(target))
                .with_context(|| format!("adding {} as {target}", source.display()))?;
        }
    }
    if let Some(entry) = spec.entrypoint.first() {
        // Not through a symlink: an absolute one would point at the host's file.
        let path = rootfs.image_path(Path::new(entry));
        if fs::symlink_metadata(&path).is_ok_and(|meta| meta.is_file()) {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        }
    }
    // The libraries: `ldd` lists them transitively, so the libraries themselves need no `ldd`.
    let elves = std::mem::take(&mut rootfs.elves);
    for elf in elves {
        for library in shared_libraries(&elf)? {
            rootfs
                .add_host(&library, false)
                .with_context(|| format!("adding {} (for {})", library.display(), elf.display()))?;
        }
    }
    rootfs.write(Path::new("/etc/passwd"), PASSWD)?;
    rootfs.write(Path::new("/etc/group"), GROUP)?;
    rootfs.write(Path::new("/etc/nsswitch.conf"), NSSWITCH)?;
    if Path::new(CA_CERTIFICATES).is_file() {
        rootfs.add_as(Path::new(CA_CERTIFICATES), Path::new(CA_CERTIFICATES))?;
    }
    for dir in std::iter::once("/tmp").chain(spec.writable_dirs.iter().map(String::as_str)) {
        rootfs.make_dir(Path::new(dir), 0o1777)?;
    }
    Ok(rootfs.files)
}

/// The absolute paths `ldd` names for `elf` (the dynamic loader included); none for a static
/// binary. Fails when a library is not found.
fn shared_libraries(elf: &Path) -> Result<Vec<PathBuf>> {
    // The test harness's (or anyone's) library path must not change what the image gets: in the
    // image the loader searches only its default directories.
    let out = Command::new("ldd")
        .arg(elf)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("LD_PRELOAD")
        .output()
        .context("running ldd (install libc-bin)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stdout.contains("not a dynamic executable") || stderr.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed ({}): {}{}", elf.display(), out.status, stdout.trim(), stderr.trim());
    }
    let mut libraries = Vec::new();
    let mut missing = Vec::new();
    for line in stdout.lines().map(str::trim) {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`, `libfoo.so => not found`,
        // `/lib64/ld-linux-x86-64.so.2 (0x...)`, `linux-vdso.so.1 (0x...)`, `statically linked`.
        let path = match line.split_once("=>") {
            Some((name, rest)) => match rest.split_whitespace().next() {
                Some(path) if path.starts_with('/') => path,
                _ if rest.contains("not found") => {
                    missing.push(name.trim().to_owned());
                    continue;
                }
                _ => continue,
            },
            None => match line.split_whitespace().next() {
                Some(path) if path.starts_with('/') => path,
                _ => continue,
            },
        };
        libraries.push(PathBuf::from(path));
    }
    ensure!(missing.is_empty(), "{} needs libraries this machine lacks: {}", elf.display(), missing.join(", "));
    Ok(libraries)
}

/// A root filesystem being assembled.
#[derive(Default)]
struct Rootfs {
    root: PathBuf,
    exclude: Vec<PathBuf>,
    /// Symlink-free host paths already copied to their own path.
    seen: HashSet<PathBuf>,
    /// Host paths of the ELF files among the sources, for `ldd`.
    elves: Vec<PathBuf>,
    /// Regular files copied or written.
    files: usize,
}

impl Rootfs {
    fn image_path(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }

    fn excluded(&self, path: &Path) -> bool {
        self.exclude.iter().any(|ex| path.starts_with(ex))
    }

    /// Copies host `path` (file, directory or symlink) to the same path in the image. Symlinks on
    /// the way, in the path itself or inside a directory, are recreated and their targets added:
    /// the image resolves the path exactly as the host does. `from_source` marks ELF files for `ldd`.
    fn add_host(&mut self, path: &Path, from_source: bool) -> Result<()> {
        self.add_host_at_depth(path, from_source, 0)
    }

    fn add_host_at_depth(&mut self, path: &Path, from_source: bool, depth: u32) -> Result<()> {
        ensure!(depth < 40, "too many levels of symbolic links resolving {}", path.display());
        ensure!(path.is_absolute(), "{} is not absolute", path.display());
        let components: Vec<Component> = path.components().collect();
        let mut resolved = PathBuf::from("/");
        for (i, component) in components.iter().enumerate() {
            match component {
                Component::Normal(name) => resolved.push(name),
                Component::ParentDir => {
                    resolved.pop();
                    continue;
                }
                Component::RootDir | Component::CurDir | Component::Prefix(_) => continue,
            }
            if self.excluded(&resolved) {
                return Ok(());
            }
            let meta = fs::symlink_metadata(&resolved).with_context(|| format!("reading {}", resolved.display()))?;
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&resolved)?;
                self.symlink(&resolved, &target)?;
                let mut next = match resolved.parent() {
                    Some(parent) if target.is_relative() => parent.join(&target),
                    _ => target,
                };
                for rest in &components[i + 1..] {
                    next.push(rest.as_os_str());
                }
                return self.add_host_at_depth(&next, from_source, depth + 1);
            }
        }
        if !self.seen.insert(resolved.clone()) {
            return Ok(());
        }
        let meta = fs::metadata(&resolved)?;
        if meta.is_dir() {
            self.make_dir(&resolved, 0o755)?;
            let mut entries = fs::read_dir(&resolved)?.map(|e| e.map(|e| e.path())).collect::<Result<Vec<_>, _>>()?;
            entries.sort();
            for entry in entries {
                self.add_host_at_depth(&entry, from_source, depth)?;
            }
        } else if meta.is_file() {
            self.copy(&resolved, &resolved, from_source)?;
        } else {
            tracing::debug!(path = %resolved.display(), "not a file, directory or symlink: left out of the image");
        }
        Ok(())
    }

    /// Copies host `source` to `target` in the image, following symlinks (a directory whole).
    fn add_as(&mut self, source: &Path, target: &Path) -> Result<()> {
        let meta = fs::metadata(source).with_context(|| format!("reading {}", source.display()))?;
        if meta.is_dir() {
            self.make_dir(target, 0o755)?;
            let mut entries = fs::read_dir(source)?.map(|e| e.map(|e| e.file_name())).collect::<Result<Vec<_>, _>>()?;
            entries.sort();
            for name in entries {
                self.add_as(&source.join(&name), &target.join(&name))?;
            }
            Ok(())
        } else {
            self.copy(source, target, true)
        }
    }

    fn copy(&mut self, source: &Path, target: &Path, from_source: bool) -> Result<()> {
        let meta = fs::metadata(source).with_context(|| format!("reading {}", source.display()))?;
        let dest = self.prepare(target)?;
        fs::copy(source, &dest).with_context(|| format!("copying {} to {}", source.display(), dest.display()))?;
        let mode = if meta.permissions().mode() & 0o111 != 0 { 0o755 } else { 0o644 };
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))?;
        self.files += 1;
        if from_source && is_elf(source)? {
            self.elves.push(source.to_owned());
        }
        Ok(())
    }

    fn write(&mut self, target: &Path, contents: &str) -> Result<()> {
        let dest = self.prepare(target)?;
        fs::write(&dest, contents).with_context(|| format!("writing {}", dest.display()))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o644))?;
        self.files += 1;
        Ok(())
    }

    fn symlink(&mut self, link: &Path, target: &Path) -> Result<()> {
        let dest = self.image_path(link);
        if fs::symlink_metadata(&dest).is_ok() {
            return Ok(());
        }
        self.make_parents(link)?;
        symlink(target, &dest).with_context(|| format!("linking {} to {}", dest.display(), target.display()))
    }

    /// A directory at `target` in the image with `mode` (and its missing parents, 0755).
    fn make_dir(&mut self, target: &Path, mode: u32) -> Result<()> {
        let dest = self.image_path(target);
        match fs::symlink_metadata(&dest) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => bail!("{} is already in the image as something other than a directory", target.display()),
            Err(_) => {
                self.make_parents(target)?;
                fs::create_dir(&dest).with_context(|| format!("creating {}", dest.display()))?;
            }
        }
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    /// Makes `target`'s parents and removes whatever is at `target`: the path to write it to.
    fn prepare(&mut self, target: &Path) -> Result<PathBuf> {
        self.make_parents(target)?;
        let dest = self.image_path(target);
        if let Ok(meta) = fs::symlink_metadata(&dest) {
            ensure!(!meta.is_dir(), "{} is already in the image as a directory", target.display());
            fs::remove_file(&dest)?;
        }
        Ok(dest)
    }

    /// Creates the missing parents of `target` (0755). A parent that is a symlink in the image is
    /// an error: writing through it could leave the image (an absolute link points into the host).
    fn make_parents(&self, target: &Path) -> Result<()> {
        let Some(parent) = target.parent() else { return Ok(()) };
        let mut dest = self.root.clone();
        for component in parent.components() {
            let Component::Normal(name) = component else { continue };
            dest.push(name);
            match fs::symlink_metadata(&dest) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => bail!("{}: {} is not a directory in the image", target.display(), dest.display()),
                Err(_) => {
                    fs::create_dir(&dest).with_context(|| format!("creating {}", dest.display()))?;
                    fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))?;
                }
            }
        }
        Ok(())
    }
}

fn is_elf(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 4];
    let mut file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(file.read_exact(&mut magic).is_ok() && magic == *b"\x7fELF")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_splits_into_base_name_and_tag() {
        let spec = |reference: &str| ImageSpec { reference: reference.to_owned(), ..ImageSpec::default() };
        let order = spec("ghcr.io/ftgo-rs/order-service:0.1.0");
        assert_eq!((order.base_name(), order.tag()), ("ghcr.io/ftgo-rs/order-service", "0.1.0"));
        assert_eq!(order.archive_name(), "ghcr.io_ftgo-rs_order-service_0.1.0.tar");
        let with_port = spec("localhost:5000/pause");
        assert_eq!((with_port.base_name(), with_port.tag()), ("localhost:5000/pause", "latest"));
        assert!(with_port.validate().is_err(), "a reference without a tag is refused");
    }

    #[test]
    fn versions_come_from_install_sh() {
        assert_eq!(pinned_version("POSTGRES_MAJOR").unwrap(), "15");
        assert!(pinned_version("NATS_VERSION").unwrap().starts_with("2."));
        assert!(pinned_version("NO_SUCH_VERSION").is_err());
    }
}
