//! Builds the example's WAR from its web application folder.

use std::io::Write;
use std::path::Path;

/// Packs every file under `dir` into a WAR (a zip archive), paths relative to
/// `dir`, in a stable order so the same folder gives the same bytes.
///
/// # Errors
/// A message naming the file that could not be read or packed.
pub fn build_war(dir: &Path) -> Result<Vec<u8>, String> {
    let mut files = Vec::new();
    collect(dir, dir, &mut files)
        .map_err(|e| format!("cannot read the web application {}: {e}", dir.display()))?;
    if !files.iter().any(|(name, _)| name == "WEB-INF/web.xml") {
        return Err(format!(
            "{} has no WEB-INF/web.xml: not a web application",
            dir.display()
        ));
    }
    files.sort();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    // A fixed timestamp keeps the archive identical from one build to the next,
    // so redeploying an unchanged application changes nothing on the node.
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o644);
    for (name, path) in &files {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        zip.start_file(name.as_str(), options)
            .and_then(|()| zip.write_all(&bytes).map_err(Into::into))
            .map_err(|e| format!("cannot pack {name}: {e}"))?;
    }
    let cursor = zip
        .finish()
        .map_err(|e| format!("cannot finish the WAR: {e}"))?;
    Ok(cursor.into_inner())
}

fn collect(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(String, std::path::PathBuf)>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect(root, &path, out)?;
        } else {
            let rel = path.strip_prefix(root).map_err(std::io::Error::other)?;
            let name: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push((name.join("/"), path));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_web_app_packs_into_a_stable_war() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tomcat/webapp");
        let war = build_war(&dir).unwrap();
        assert_eq!(&war[..2], b"PK");
        assert_eq!(
            war,
            build_war(&dir).unwrap(),
            "two builds of the same folder differ"
        );
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(war)).unwrap();
        let mut names: Vec<String> = archive
            .file_names()
            .map(|n| n.unwrap().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["WEB-INF/web.xml", "index.html"]);
        let mut index = String::new();
        std::io::Read::read_to_string(&mut archive.by_name("index.html").unwrap(), &mut index)
            .unwrap();
        assert!(index.contains("pyscaler demo app"));
    }

    #[test]
    fn a_folder_without_web_xml_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "hi").unwrap();
        assert!(build_war(dir.path())
            .unwrap_err()
            .contains("no WEB-INF/web.xml"));
    }
}
