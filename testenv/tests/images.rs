//! The container images testenv builds without a Docker daemon (`ftgo_testenv::images`), checked
//! with real tools: what the archives hold, that a workspace image keeps the `Dockerfile`'s
//! contract, and that the Postgres image's file set is complete enough to initialise a cluster and
//! serve a password login.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Component, Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use ftgo_testenv::{
    images::{self, ImageSpec},
    process::{ServerProcess, free_port},
};
use serde_json::{Value, json};
use sqlx::Connection;

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An image archive taken apart: its OCI index, manifest and config, the `tar -tv` listing of its
/// one layer, and its root filesystem unpacked by umoci.
struct Unpacked {
    _dir: tempfile::TempDir,
    index: Value,
    manifest: Value,
    config: Value,
    /// `(mode string, owner uid/gid, path)` of each layer entry.
    listing: Vec<(String, String, String)>,
    rootfs: PathBuf,
}

impl Unpacked {
    fn new(archive: &Path, spec: &ImageSpec) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        fs::create_dir(&layout).unwrap();
        let top: Vec<String> = run(Command::new("tar").arg("-tf").arg(archive))
            .lines()
            .filter_map(|entry| entry.split('/').next().map(str::to_owned))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(top, ["blobs", "index.json", "oci-layout"], "the archive's root is the layout's root");
        run(Command::new("tar").arg("-xf").arg(archive).arg("-C").arg(&layout));
        let read = |path: PathBuf| -> Value { serde_json::from_slice(&fs::read(&path).unwrap()).unwrap() };
        let blob = |digest: &Value| {
            layout.join("blobs/sha256").join(digest.as_str().unwrap().strip_prefix("sha256:").unwrap())
        };

        let oci_layout = read(layout.join("oci-layout"));
        assert_eq!(oci_layout["imageLayoutVersion"], "1.0.0");
        let index = read(layout.join("index.json"));
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 1, "exactly one image in {index}");
        // What `ctr images import --base-name <base_name>` turns into `<base_name>:<tag>`.
        assert_eq!(manifests[0]["annotations"]["org.opencontainers.image.ref.name"], spec.tag());
        let manifest = read(blob(&manifests[0]["digest"]));
        let config = read(blob(&manifest["config"]["digest"]));
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1, "one layer: {manifest}");
        assert_eq!(layers[0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
        let listing = run(Command::new("tar").arg("--numeric-owner").arg("-tvzf").arg(blob(&layers[0]["digest"])))
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields[0].to_owned(), fields[1].to_owned(), fields[5].to_owned())
            })
            .collect();

        let bundle = dir.path().join("bundle");
        let mut unpack = Command::new(images::umoci().unwrap());
        unpack.arg("unpack").arg("--image").arg(format!("{}:{}", layout.display(), spec.tag()));
        if !is_root() {
            unpack.arg("--rootless");
        }
        run(unpack.arg(&bundle));
        Self { _dir: dir, index, manifest, config, listing, rootfs: bundle.join("rootfs") }
    }

    /// `path` resolved inside the root filesystem, following its symlinks there (an absolute one
    /// from the image's root, not the host's).
    fn resolve(&self, path: &str) -> PathBuf {
        let mut pending: Vec<std::ffi::OsString> = Path::new(path)
            .components()
            .rev()
            .filter_map(|c| match c {
                Component::Normal(name) => Some(name.to_owned()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect();
        let mut resolved = PathBuf::new();
        let mut hops = 0;
        while let Some(name) = pending.pop() {
            if name == ".." {
                resolved.pop();
                continue;
            }
            resolved.push(&name);
            let on_disk = self.rootfs.join(&resolved);
            let Ok(meta) = fs::symlink_metadata(&on_disk) else {
                panic!("{path}: {} is not in the image", resolved.display())
            };
            if meta.file_type().is_symlink() {
                hops += 1;
                assert!(hops < 40, "{path}: symlink loop");
                let target = fs::read_link(&on_disk).unwrap();
                resolved.pop();
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                pending.extend(target.components().rev().filter_map(|c| match c {
                    Component::Normal(name) => Some(name.to_owned()),
                    Component::ParentDir => Some("..".into()),
                    _ => None,
                }));
            }
        }
        self.rootfs.join(resolved)
    }

    fn env(&self) -> Vec<String> {
        self.config["config"]["Env"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
    }

    /// The layer entry for `path` (relative, as the layer lists it, e.g. `tmp/`).
    fn entry(&self, path: &str) -> &(String, String, String) {
        self.listing.iter().find(|(_, _, p)| p == path).unwrap_or_else(|| panic!("{path} is not in the layer"))
    }
}

/// Runs `args` inside `rootfs` with `chroot`: directly as root, in a user namespace otherwise.
fn in_chroot(rootfs: &Path, args: &[&str]) -> Command {
    let mut cmd = if is_root() {
        Command::new("chroot")
    } else {
        let mut cmd = Command::new("unshare");
        cmd.args(["--user", "--map-root-user", "chroot"]);
        cmd
    };
    // Only PATH: the one the images have, which also finds `chroot` and `unshare` on Debian.
    cmd.arg(rootfs).args(args).env_clear().env("PATH", images::DEFAULT_PATH);
    cmd
}

/// The host's `ldd` answer for `binary`: the libraries (and loader) the image must hold.
fn host_libraries(binary: &str) -> Vec<String> {
    run(Command::new("ldd").arg(binary).env_remove("LD_LIBRARY_PATH"))
        .lines()
        .filter_map(|line| {
            let path = line.split_once("=>").map_or(line.trim(), |(_, rest)| rest.trim());
            path.split_whitespace().next().filter(|p| p.starts_with('/')).map(str::to_owned)
        })
        .collect()
}

#[test]
fn pause_and_a_dynamically_linked_binary_become_complete_oci_images() {
    let out = tempfile::tempdir().unwrap();
    let pause = images::pause().unwrap();
    // A workspace-like image from a small dynamically linked host binary.
    let mut service = images::workspace_binary("true-service", Path::new("/usr/bin/true"), "test");
    service.env.push(("FTGO_GREETING".to_owned(), "hello".to_owned()));
    service.exposed_ports = vec![8080];
    let archives = images::build_all(&[pause.clone(), service.clone()], out.path()).unwrap();
    assert_eq!(
        archives,
        [out.path().join("ftgo.local_pause_1.tar"), out.path().join("ghcr.io_ftgo-rs_true-service_test.tar")]
    );

    let image = Unpacked::new(&archives[0], &pause);
    assert_eq!((image.config["os"].as_str(), image.config["architecture"].as_str()), (Some("linux"), Some("amd64")));
    assert_eq!(image.config["config"]["Entrypoint"], json!(["/pause"]));
    assert_eq!(image.config["config"]["User"], "65535:65535");
    assert_eq!(image.entry("pause").0, "-rwxr-xr-x");
    let version = run(&mut in_chroot(&image.rootfs, &["/pause", "-v"]));
    assert_eq!(version.trim(), format!("ftgo-pause {}", images::pinned_version("PAUSE_VERSION").unwrap()));

    let image = Unpacked::new(&archives[1], &service);
    let config = &image.config["config"];
    assert_eq!(image.index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "test");
    assert_eq!(config["Entrypoint"], json!(["/usr/local/bin/ftgo"]));
    assert!(config["Cmd"].is_null(), "no default arguments: {config}");
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(config["ExposedPorts"], json!({"8080/tcp": {}}));
    let env = image.env();
    assert!(env.contains(&"FTGO_GREETING=hello".to_owned()), "{env:?}");
    assert!(env.contains(&format!("PATH={}", images::DEFAULT_PATH)), "{env:?}");
    assert_eq!(image.manifest["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");

    // The binary, executable, and every library and the loader `ldd` names, where the loader
    // will look for them: the binary runs in the image's root and nowhere else.
    assert_eq!(image.entry("usr/local/bin/ftgo").0, "-rwxr-xr-x");
    let libraries = host_libraries("/usr/bin/true");
    assert!(libraries.iter().any(|l| l.contains("libc.so")), "{libraries:?}");
    for library in &libraries {
        let in_image = image.resolve(library);
        let host = fs::canonicalize(library).unwrap();
        assert_eq!(fs::metadata(&in_image).unwrap().len(), fs::metadata(&host).unwrap().len(), "{library}");
    }
    run(&mut in_chroot(&image.rootfs, &["/usr/local/bin/ftgo"]));

    // /etc, /tmp, and everything root's and readable by all.
    let passwd = fs::read_to_string(image.rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.lines().any(|l| l.starts_with("ftgo:x:65532:65532:") && l.contains(":/nonexistent:")), "{passwd}");
    assert!(passwd.lines().any(|l| l.starts_with("root:x:0:0:")), "{passwd}");
    let group = fs::read_to_string(image.rootfs.join("etc/group")).unwrap();
    assert!(group.lines().any(|l| l.starts_with("ftgo:x:65532:")), "{group}");
    if Path::new("/etc/ssl/certs/ca-certificates.crt").is_file() {
        image.entry("etc/ssl/certs/ca-certificates.crt");
    }
    assert_eq!(image.entry("tmp/").0, "drwxrwxrwt");
    for (mode, owner, path) in &image.listing {
        assert_eq!(owner, "0/0", "{path} is root's");
        assert_eq!(&mode[7..8], "r", "{path} ({mode}) is readable by all");
    }

    // Built once: a second build is a no-op; a changed spec is rebuilt.
    let key = |spec: &ImageSpec| fs::read_to_string(out.path().join(format!("{}.key", spec.archive_name()))).unwrap();
    let mtime = |path: &Path| fs::metadata(path).unwrap().modified().unwrap();
    let (built_at, old_key) = (mtime(&archives[1]), key(&service));
    assert_eq!(images::build(&service, out.path()).unwrap(), archives[1]);
    assert_eq!(mtime(&archives[1]), built_at, "an up-to-date image is not rebuilt");
    service.env.push(("FTGO_MORE".to_owned(), "1".to_owned()));
    images::build(&service, out.path()).unwrap();
    assert_ne!(key(&service), old_key, "a changed spec is rebuilt");
    assert!(Unpacked::new(&archives[1], &service).env().contains(&"FTGO_MORE=1".to_owned()));
}

/// The final stage of a Dockerfile: `(INSTRUCTION, arguments)`, continuation lines joined.
fn final_stage(dockerfile: &str) -> Vec<(String, String)> {
    let mut instructions: Vec<(String, String)> = Vec::new();
    let mut pending = String::new();
    for line in dockerfile.lines() {
        let line = line.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let (instruction, args) = pending.split_once(char::is_whitespace).unwrap_or((&pending, ""));
        instructions.push((instruction.to_uppercase(), args.trim().to_owned()));
        pending.clear();
    }
    let last_from = instructions.iter().rposition(|(i, _)| i == "FROM").expect("the Dockerfile has a FROM");
    instructions.split_off(last_from + 1)
}

#[test]
fn a_workspace_image_keeps_the_dockerfiles_contract() {
    let dockerfile = fs::read_to_string(repository_root().join("Dockerfile")).unwrap();
    let spec = images::workspace_binary("order-service", Path::new("/src/target/release/order-service"), "0.1.0");

    // The name the Dockerfile's usage line gives the image.
    let usage = dockerfile.lines().find(|l| l.contains("docker build")).expect("a `docker build` usage line");
    let tagged = usage.split_whitespace().skip_while(|w| *w != "-t").nth(1).expect("`-t <reference>` in the usage");
    assert!(usage.contains("BIN=order-service"), "{usage}");
    assert_eq!(spec.reference, tagged);

    let mut env = BTreeMap::new();
    let mut ports = Vec::new();
    let (mut user, mut entrypoint, mut cmd, mut workdir, mut binary) = (None, None, Vec::new(), None, None);
    let exec_form = |args: &str| -> Vec<String> {
        serde_json::from_str(args).unwrap_or_else(|_| panic!("{args}: use the exec (JSON) form"))
    };
    for (instruction, args) in final_stage(&dockerfile) {
        match instruction.as_str() {
            "USER" => user = Some(args),
            "ENTRYPOINT" => entrypoint = Some(exec_form(&args)),
            "CMD" => cmd = exec_form(&args),
            "WORKDIR" => workdir = Some(args),
            "EXPOSE" => {
                ports.extend(args.split_whitespace().map(|p| p.trim_end_matches("/tcp").parse::<u16>().unwrap()))
            }
            "ENV" if args.contains('=') => {
                for pair in args.split_whitespace() {
                    let (name, value) = pair.split_once('=').unwrap();
                    env.insert(name.to_owned(), value.trim_matches('"').to_owned());
                }
            }
            "ENV" => {
                let (name, value) = args.split_once(char::is_whitespace).unwrap();
                env.insert(name.to_owned(), value.trim().to_owned());
            }
            "COPY" => binary = args.split_whitespace().last().map(str::to_owned),
            // The image's CA certificates come from the host instead.
            "RUN" => assert!(args.contains("ca-certificates"), "a new RUN step in the final stage: {args}"),
            other => panic!("the Dockerfile's final stage has {other} {args}: teach images::workspace_binary"),
        }
    }
    assert_eq!(Some(spec.user.clone()), user);
    assert_eq!(Some(spec.entrypoint.clone()), entrypoint);
    assert_eq!(spec.cmd, cmd);
    assert_eq!(spec.workdir, workdir);
    assert_eq!(spec.exposed_ports, ports);
    assert_eq!(binary.as_deref(), Some(spec.files[0].1.as_str()));
    assert_eq!(spec.files[0].0, Path::new("/src/target/release/order-service"));
    // debian:bookworm-slim's PATH, unless the Dockerfile sets its own.
    env.entry("PATH".to_owned())
        .or_insert_with(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned());
    assert_eq!(spec.env.into_iter().collect::<BTreeMap<_, _>>(), env);
}

#[test]
fn the_infrastructure_images_carry_the_versions_install_sh_pins_and_run_them() {
    let specs = images::infrastructure().unwrap();
    let references: Vec<&str> = specs.iter().map(|s| s.reference.as_str()).collect();
    let pinned = |name: &str| images::pinned_version(name).unwrap();
    assert_eq!(
        references,
        [
            format!("ftgo.local/postgres:{}", pinned("POSTGRES_MAJOR")),
            format!("ftgo.local/nats:{}", pinned("NATS_VERSION")),
            format!("ftgo.local/consul:{}", pinned("CONSUL_VERSION")),
            format!("ftgo.local/fabio:{}", pinned("FABIO_VERSION")),
        ]
    );
    let ports: Vec<Vec<u16>> = specs.iter().map(|s| s.exposed_ports.clone()).collect();
    assert_eq!(ports, [vec![5432], vec![4222, 8222], vec![8500], vec![9999, 9997, 9998]]);
    for spec in &specs {
        assert_eq!(spec.user, "65532:65532", "{}", spec.reference);
    }

    // Each image's server reports the pinned version from inside the image.
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("images");
    let archives = images::build_all(&specs, &out).unwrap();
    let version_args: [&[&str]; 4] = [&["--version"], &["--version"], &["version"], &["-v"]];
    let expected = [
        format!("(PostgreSQL) {}.", pinned("POSTGRES_MAJOR")),
        format!("v{}", pinned("NATS_VERSION")),
        format!("v{}", pinned("CONSUL_VERSION")),
        pinned("FABIO_VERSION"),
    ];
    for (((spec, archive), args), expected) in specs.iter().zip(&archives).zip(version_args).zip(expected) {
        let image = Unpacked::new(archive, spec);
        // Postgres's entrypoint is a script that runs `postgres`: ask `postgres` itself.
        let program = if spec.reference.contains("/postgres:") { "postgres" } else { spec.entrypoint[0].as_str() };
        let mut cmd = in_chroot(&image.rootfs, &[&[program], args].concat());
        let path = image.env().into_iter().find_map(|e| e.strip_prefix("PATH=").map(str::to_owned)).unwrap();
        cmd.env("PATH", path);
        let output = cmd.output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success() && text.contains(&expected), "{}: {cmd:?}: {text}", spec.reference);
        for dir in &spec.writable_dirs {
            assert_eq!(image.entry(&format!("{}/", dir.trim_start_matches('/'))).0, "drwxrwxrwt", "{dir}");
        }
    }
}

/// Device nodes a container runtime provides in `/dev` (initdb writes to `/dev/null`).
fn make_dev(rootfs: &Path) {
    let dev = rootfs.join("dev");
    fs::create_dir_all(dev.join("shm")).unwrap();
    fs::set_permissions(dev.join("shm"), fs::Permissions::from_mode(0o1777)).unwrap();
    for (name, minor) in [("null", 3), ("zero", 5), ("full", 7), ("random", 8), ("urandom", 9)] {
        let path = std::ffi::CString::new(dev.join(name).into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: plain syscalls on a path we own.
        let made = unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, minor)) };
        assert_eq!(made, 0, "mknod /dev/{name}: {}", std::io::Error::last_os_error());
        unsafe { libc::chmod(path.as_ptr(), 0o666) };
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_postgres_image_initialises_a_cluster_and_serves_a_password_login() {
    ftgo_testenv::init_test_tracing();
    assert!(
        is_root(),
        "this test runs the Postgres image's entrypoint as 65532 in a chroot of the image, which needs root \
         (CI runs tests as root); the other image tests run unprivileged"
    );
    // Archives are cached across runs in cargo's temporary directory: a rerun rebuilds nothing
    // unless Postgres, the entrypoint script or the builder changed.
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("images");
    let spec = images::postgres().unwrap();
    let archive = images::build_all(std::slice::from_ref(&spec), &out).unwrap().remove(0);
    let image = Unpacked::new(&archive, &spec);
    let config = &image.config["config"];
    assert_eq!(config["Entrypoint"], json!([images::POSTGRES_ENTRYPOINT]));
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(config["ExposedPorts"], json!({"5432/tcp": {}}));
    assert_eq!(image.entry("var/run/postgresql/").0, "drwxrwxrwt");
    assert!(!image.rootfs.join("usr/lib/postgresql/15/lib/llvmjit.so").exists(), "the JIT is left out");
    make_dev(&image.rootfs);

    let port = free_port().unwrap();
    let password = uuid::Uuid::new_v4().simple().to_string();
    let mut env: Vec<(String, String)> = image
        .env()
        .iter()
        .map(|pair| pair.split_once('=').unwrap())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert!(env.iter().any(|(k, v)| k == "PATH" && v.starts_with("/usr/lib/postgresql/15/bin:")), "{env:?}");
    env.push(("POSTGRES_PASSWORD".to_owned(), password.clone()));

    // The entrypoint as the container runtime would start it: the image's user, env and args, with
    // its own System V IPC namespace. `unshare` (no --fork) and `chroot` exec, so the child is the
    // entrypoint and then the postmaster itself: SIGINT stops it cleanly, and it dies with us.
    let mut cmd = Command::new("unshare");
    cmd.args(["--ipc", "chroot", "--userspec=65532:65532"])
        .arg(&image.rootfs)
        .arg(images::POSTGRES_ENTRYPOINT)
        .args(["-c", &format!("port={port}"), "-c", "listen_addresses=127.0.0.1"])
        .env_clear()
        .envs(env.iter().cloned());
    let logs = tempfile::tempdir().unwrap();
    let mut server =
        ServerProcess::spawn("postgres image", cmd, &logs.path().join("postgres.log"), libc::SIGINT).unwrap();

    // The operator's readiness probe, inside the image: `pg_isready -U postgres` on the default
    // socket directory (PGPORT only because this server is not on 5432).
    let rootfs = image.rootfs.clone();
    let probe_env = env.clone();
    server
        .wait_ready(Duration::from_secs(90), move || {
            let mut probe = Command::new("chroot");
            probe
                .args(["--userspec=65532:65532"])
                .arg(&rootfs)
                .args(["pg_isready", "-U", "postgres"])
                .env_clear()
                .envs(probe_env.iter().cloned())
                .env("PGPORT", port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let ready = probe.status().is_ok_and(|status| status.success());
            async move { ready }
        })
        .await
        .unwrap();

    let url = |password: &str| format!("postgres://postgres:{password}@127.0.0.1:{port}/postgres");
    let mut conn = sqlx::PgConnection::connect(&url(&password)).await.unwrap();
    let version: String = sqlx::query_scalar("select version()").fetch_one(&mut conn).await.unwrap();
    assert!(version.starts_with("PostgreSQL 15."), "{version}");
    let (user, encoding): (String, String) = sqlx::query_as(
        "select current_user::text, pg_encoding_to_char(encoding) from pg_database where datname = 'postgres'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!((user.as_str(), encoding.as_str()), ("postgres", "UTF8"));
    conn.close().await.unwrap();
    let refused = sqlx::PgConnection::connect(&url("wrong")).await.expect_err("a wrong password is refused");
    assert!(refused.to_string().contains("password authentication failed"), "{refused}");

    // The data belongs to the image's user, and the password file initdb read is gone.
    let pg_version = image.rootfs.join("var/lib/postgresql/data/PG_VERSION");
    assert_eq!(fs::metadata(&pg_version).unwrap().uid(), 65532);
    let leftovers: Vec<_> = fs::read_dir(image.rootfs.join("tmp")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(leftovers.is_empty(), "left in /tmp: {leftovers:?}");
    server.stop();
}
