//! Blobs as deflate-compressed files in the plugin's own folder (the node pre-opens it as `/`).
//!
//! A key maps to `<hex(key)>.z` (so no key can name a path outside the folder) plus
//! `<hex(key)>.size` with the uncompressed size. A blob is written to a temporary file and
//! renamed into place when finished, so a reader never sees half a blob.

use std::fs::{self, File};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use veche_plugin_api::*;

fn io(e: std::io::Error) -> PluginError {
    PluginError::Unavailable(format!("file system: {e}"))
}

/// The store over a folder.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn data(&self, key: &str) -> PathBuf {
        self.root.join(format!("{}.z", hex::encode(key)))
    }

    fn size_file(&self, key: &str) -> PathBuf {
        self.root.join(format!("{}.size", hex::encode(key)))
    }

    pub fn writer(&self, key: &str) -> Result<FsWriter, PluginError> {
        if key.is_empty() || key.len() > 512 {
            return Err(PluginError::Invalid("a key is 1 to 512 bytes".into()));
        }
        let tmp = self.root.join(format!("{}.tmp", hex::encode(key)));
        let file = File::create(&tmp).map_err(io)?;
        Ok(FsWriter {
            store: self.clone(),
            key: key.to_owned(),
            tmp,
            encoder: Some(DeflateEncoder::new(file, Compression::fast())),
            size: 0,
        })
    }

    pub fn reader(&self, key: &str) -> Result<FsReader, PluginError> {
        match File::open(self.data(key)) {
            Ok(f) => Ok(FsReader {
                decoder: DeflateDecoder::new(BufReader::new(f)),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(PluginError::NotFound),
            Err(e) => Err(io(e)),
        }
    }

    pub fn stat(&self, key: &str) -> Result<Option<BlobInfo>, PluginError> {
        match fs::read_to_string(self.size_file(key)) {
            Ok(s) if self.data(key).exists() => Ok(Some(BlobInfo {
                key: key.to_owned(),
                size: s
                    .trim()
                    .parse()
                    .map_err(|_| PluginError::Internal("bad size file".into()))?,
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    pub fn delete(&self, key: &str) -> Result<bool, PluginError> {
        let existed = match fs::remove_file(self.data(key)) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(io(e)),
        };
        let _ = fs::remove_file(self.size_file(key));
        Ok(existed)
    }

    pub fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<BlobInfo>, PluginError> {
        let mut keys: Vec<String> = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(io)? {
            let name = entry.map_err(io)?.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".z")) else {
                continue;
            };
            let Some(key) = hex::decode(stem)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
            else {
                continue;
            };
            if key.starts_with(prefix) && after.is_none_or(|a| key.as_str() > a) {
                keys.push(key);
            }
        }
        keys.sort();
        keys.into_iter()
            .take(limit as usize)
            .map(|k| {
                self.stat(&k)
                    .map(|i| i.unwrap_or(BlobInfo { key: k, size: 0 }))
            })
            .collect()
    }
}

/// A blob being written.
#[allow(missing_debug_implementations)] // the encoder is not Debug
pub struct FsWriter {
    store: Store,
    key: String,
    tmp: PathBuf,
    encoder: Option<DeflateEncoder<File>>,
    size: u64,
}

impl BlobWriter for FsWriter {
    fn write(&mut self, chunk: Vec<u8>) -> Result<(), PluginError> {
        let enc = self
            .encoder
            .as_mut()
            .ok_or_else(|| PluginError::Invalid("the blob is finished".into()))?;
        enc.write_all(&chunk).map_err(io)?;
        self.size += chunk.len() as u64;
        Ok(())
    }

    fn finish(&mut self) -> Result<BlobInfo, PluginError> {
        let enc = self
            .encoder
            .take()
            .ok_or_else(|| PluginError::Invalid("the blob is finished".into()))?;
        let file = enc.finish().map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::write(self.store.size_file(&self.key), self.size.to_string()).map_err(io)?;
        fs::rename(&self.tmp, self.store.data(&self.key)).map_err(io)?;
        Ok(BlobInfo {
            key: self.key.clone(),
            size: self.size,
        })
    }

    fn abort(&mut self) {
        self.encoder = None;
        let _ = fs::remove_file(&self.tmp);
    }
}

/// A blob being read.
#[allow(missing_debug_implementations)] // the decoder is not Debug
pub struct FsReader {
    decoder: DeflateDecoder<BufReader<File>>,
}

impl BlobReader for FsReader {
    fn read(&mut self, max_bytes: u32) -> Result<Option<Vec<u8>>, PluginError> {
        let mut buf = vec![0u8; max_bytes.clamp(1, 1 << 20) as usize];
        let mut n = 0;
        while n < buf.len() {
            match self.decoder.read(&mut buf[n..]).map_err(io)? {
                0 => break,
                k => n += k,
            }
        }
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some(buf))
    }
}

struct FsStore;

fn store() -> Store {
    Store::new(Path::new("/"))
}

impl Plugin for FsStore {
    fn open_write(_cx: Invocation, key: String) -> Result<Box<dyn BlobWriter>, PluginError> {
        Ok(Box::new(store().writer(&key)?))
    }
    fn open_read(_cx: Invocation, key: String) -> Result<Box<dyn BlobReader>, PluginError> {
        Ok(Box::new(store().reader(&key)?))
    }
    fn stat(_cx: Invocation, key: String) -> Result<Option<BlobInfo>, PluginError> {
        store().stat(&key)
    }
    fn delete(_cx: Invocation, key: String) -> Result<bool, PluginError> {
        store().delete(&key)
    }
    fn list(
        _cx: Invocation,
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<BlobInfo>, PluginError> {
        store().list(&prefix, after.as_deref(), limit)
    }
}

register_plugin!(FsStore);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_compressed_and_listed() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::new(dir.path());
        let data: Vec<u8> = b"veche ".iter().copied().cycle().take(300_000).collect();
        let mut w = s.writer("a/1").unwrap();
        for chunk in data.chunks(65536) {
            w.write(chunk.to_vec()).unwrap();
        }
        assert_eq!(w.finish().unwrap().size, 300_000);
        let on_disk = fs::metadata(s.data("a/1")).unwrap().len();
        assert!(on_disk < 10_000, "repetitive data compresses: {on_disk}");
        let mut r = s.reader("a/1").unwrap();
        let mut back = Vec::new();
        while let Some(c) = r.read(100_000).unwrap() {
            back.extend(c);
        }
        assert_eq!(back, data);
        s.writer("a/2").unwrap().finish().unwrap();
        s.writer("b/1").unwrap().finish().unwrap();
        let keys: Vec<String> = s
            .list("a/", None, 10)
            .unwrap()
            .into_iter()
            .map(|b| b.key)
            .collect();
        assert_eq!(keys, ["a/1", "a/2"]);
        assert!(s.delete("a/1").unwrap());
        assert!(!s.delete("a/1").unwrap());
        assert!(matches!(s.reader("a/1"), Err(PluginError::NotFound)));
    }

    #[test]
    fn an_aborted_blob_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::new(dir.path());
        let mut w = s.writer("x").unwrap();
        w.write(vec![1, 2, 3]).unwrap();
        w.abort();
        assert!(s.stat("x").unwrap().is_none());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
