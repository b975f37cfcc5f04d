//! Images without a registry: archives built from busybox-static (the pause image every
//! sandbox runs, and test images), and tarballs imported into the node's containerd with
//! Debian's `ctr`, which unpacks them for the CRI plugin as `ctr images import` does for k3s.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::Error;

/// Debian's busybox-static puts a static busybox here; it runs in an empty root filesystem.
pub const BUSYBOX: &str = "/bin/busybox";

/// A single-layer image: files to put in it, and its entrypoint and command.
pub struct Spec<'a> {
    pub reference: &'a str,
    pub entrypoint: &'a [&'a str],
    pub cmd: &'a [&'a str],
    pub env: &'a [&'a str],
}

/// Whether an ELF file needs a dynamic loader (a PT_INTERP program header).
fn is_dynamic(elf: &[u8]) -> bool {
    let u16_at = |o: usize| elf.get(o..o + 2).map_or(0, |b| u16::from_le_bytes([b[0], b[1]])) as usize;
    let u64_at =
        |o: usize| elf.get(o..o + 8).map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes"))) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let at = phoff.saturating_add(i.saturating_mul(phentsize));
        elf.get(at..at + 4) == Some(&3u32.to_le_bytes()[..])
    })
}

/// The static busybox, or a message naming the package to install.
pub fn static_busybox() -> Result<Vec<u8>, Error> {
    let missing =
        || Error::Runtime("a static busybox is needed for the pause image: apt-get install busybox-static".into());
    let bytes = std::fs::read(BUSYBOX).map_err(|_| missing())?;
    if !bytes.starts_with(b"\x7fELF") || is_dynamic(&bytes) {
        return Err(missing());
    }
    Ok(bytes)
}

/// The applets busybox offers, each linked into /bin.
fn applets() -> Vec<String> {
    let out = std::process::Command::new(BUSYBOX).arg("--list").output();
    let list = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    list.lines().map(str::trim).filter(|a| !a.is_empty() && !a.contains('/')).map(str::to_owned).collect()
}

fn sha256(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_path(path).expect("short path");
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    h
}

/// A root filesystem with busybox and its applets, /etc/passwd and the usual directories.
fn busybox_layer(busybox: &[u8]) -> Result<Vec<u8>, std::io::Error> {
    let mut layer = tar::Builder::new(Vec::new());
    for (dir, mode) in
        [("bin", 0o755), ("etc", 0o755), ("root", 0o700), ("tmp", 0o1777), ("var", 0o755), ("home", 0o755)]
    {
        layer.append(&header(dir, tar::EntryType::Directory, mode, 0), std::io::empty())?;
    }
    layer.append(&header("bin/busybox", tar::EntryType::Regular, 0o755, busybox.len() as u64), busybox)?;
    for applet in applets().iter().filter(|a| *a != "busybox") {
        let mut h = header(&format!("bin/{applet}"), tar::EntryType::Symlink, 0o777, 0);
        h.set_link_name("busybox")?;
        h.set_cksum();
        layer.append(&h, std::io::empty())?;
    }
    let passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n";
    let group = b"root:x:0:\nnogroup:x:65534:\n";
    layer.append(&header("etc/passwd", tar::EntryType::Regular, 0o644, passwd.len() as u64), &passwd[..])?;
    layer.append(&header("etc/group", tar::EntryType::Regular, 0o644, group.len() as u64), &group[..])?;
    layer.into_inner()
}

/// A docker-archive tarball (what `docker save` writes) of a busybox image.
pub fn busybox_archive(spec: &Spec) -> Result<Vec<u8>, Error> {
    let io = |e: std::io::Error| Error::Runtime(format!("cannot build image {}: {e}", spec.reference));
    let layer = busybox_layer(&static_busybox()?).map_err(io)?;
    let env: Vec<&str> =
        [&["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"][..], spec.env].concat();
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": spec.entrypoint,
            "Cmd": spec.cmd,
            "Env": env,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256(&layer))]},
        "history": [{"created_by": "rkube: busybox-static"}],
    });
    let config = serde_json::to_vec(&config).expect("json");
    let config_name = format!("{}.json", sha256(&config));
    let manifest =
        serde_json::to_vec(&json!([{"Config": config_name, "RepoTags": [spec.reference], "Layers": ["layer.tar"]}]))
            .expect("json");
    let mut archive = tar::Builder::new(Vec::new());
    for (name, bytes) in [(config_name.as_str(), &config), ("layer.tar", &layer), ("manifest.json", &manifest)] {
        archive.append(&header(name, tar::EntryType::Regular, 0o644, bytes.len() as u64), &bytes[..]).map_err(io)?;
    }
    archive.into_inner().map_err(io)
}

/// Writes a busybox image archive to `path`.
pub fn write_busybox_archive(spec: &Spec, path: &Path) -> Result<(), Error> {
    let bytes = busybox_archive(spec)?;
    let mut file = std::fs::File::create(path).map_err(|e| Error::Io(path.to_owned(), e))?;
    file.write_all(&bytes).map_err(|e| Error::Io(path.to_owned(), e))
}

/// Imports an image tarball (OCI or docker-archive) into the containerd at `socket`, in the
/// CRI plugin's namespace.
pub async fn import(socket: &Path, archive: &Path) -> Result<(), Error> {
    let ctr = crate::containerd::find_program("ctr").ok_or_else(|| {
        Error::Runtime(format!("ctr is not installed: apt-get install {}", crate::containerd::PACKAGES))
    })?;
    let out = tokio::process::Command::new(ctr)
        .arg("--address")
        .arg(socket)
        .args(["--namespace", "k8s.io", "images", "import", "--no-unpack=false"])
        .arg(archive)
        .output()
        .await
        .map_err(|e| Error::Runtime(format!("cannot run ctr: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(Error::Runtime(format!("cannot import {}: {}", archive.display(), stderr.trim())));
    }
    Ok(())
}

/// Imports the tarballs in `dir` that are new or changed since they were last imported; a
/// marker beside each records what was imported.
pub async fn import_dir(socket: &Path, dir: &Path) -> Vec<(PathBuf, Result<bool, Error>)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut archives: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tar") && p.is_file())
        .collect();
    archives.sort();
    let mut results = Vec::new();
    for archive in archives {
        let marker = dir.join(".imported").join(archive.file_name().expect("file name"));
        let stamp =
            std::fs::metadata(&archive).map(|m| format!("{} {:?}", m.len(), m.modified().ok())).unwrap_or_default();
        if std::fs::read_to_string(&marker).is_ok_and(|s| s == stamp) {
            results.push((archive, Ok(false)));
            continue;
        }
        let result = import(socket, &archive).await.map(|()| {
            let _ = std::fs::create_dir_all(dir.join(".imported"));
            let _ = std::fs::write(&marker, &stamp);
            true
        });
        results.push((archive, result));
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_static_from_dynamic_executables() {
        let own = std::fs::read("/proc/self/exe").unwrap();
        assert!(is_dynamic(&own), "test binaries link glibc dynamically");
        assert!(!is_dynamic(b"\x7fELF"));
        // scripts/deps installs busybox-static.
        assert!(!is_dynamic(&std::fs::read(BUSYBOX).unwrap()));
    }

    #[test]
    fn archive_is_a_docker_save_with_one_layer() {
        let spec = Spec { reference: "rkube.local/test:1", entrypoint: &["/bin/sh"], cmd: &[], env: &[] };
        let bytes = busybox_archive(&spec).unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let names: Vec<String> =
            archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names.len(), 3);
        assert!(names.contains(&"manifest.json".to_owned()));
        assert!(names.contains(&"layer.tar".to_owned()));
    }
}
