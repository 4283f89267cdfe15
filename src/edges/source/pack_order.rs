//! The order to read blobs in: by their place in the repository's pack files, read from
//! the pack indexes (`objects/pack/*.idx`, version 2) without libgit2.
//!
//! Why: libgit2 keeps the delta bases it inflated in a cache of fixed size (16 MiB), and
//! empties it whole when it is full. Read in tree order, the blobs of a large `clusters/`
//! jump around the pack, so past about 15 MB of YAML nearly every blob inflates its whole
//! delta chain again (30,000 clusters: 3.7 s, zlib more than half of it). `git gc` writes a
//! delta's base before the delta, so read in pack order each base was inflated just
//! before and is still cached (the same 30,000 blobs: 0.8 s). libgit2 has no call that
//! gives an object's offset, hence this small reader of the index format.
//!
//! The order only changes speed, never what is read: an object in no index (loose, in an
//! alternate, in an index this reader does not understand) is read after the others, in
//! the order it was asked for, and libgit2 still reads every object.
//!
//! The index format (gitformat-pack(5), "Version 2 pack-*.idx files"): the magic
//! `\377tOc`, the version 2, 256 fan-out counts, the sorted object ids, their CRC-32s,
//! their 4-byte offsets (the high bit set: an index into the table of 8-byte offsets that
//! follows), then the pack's and the index's checksums.

use std::path::Path;

use git2::Oid;

/// The bytes of an object id (SHA-1).
const OID_BYTES: usize = 20;
const MAGIC: [u8; 4] = [0xff, b't', b'O', b'c'];
/// Magic, version, fan-out.
const HEADER_BYTES: usize = 8 + 256 * 4;
/// An index larger than this is not read (its objects are read in the order asked):
/// an index of 10 million objects is about 290 MB, more than ordering can save.
const MAX_INDEX_BYTES: u64 = 256 << 20;

/// Why an index file cannot be used for ordering (the objects are then read unordered).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IndexError {
    #[error("not a version 2 pack index (no `\\377tOc` magic)")]
    NotVersion2,
    #[error("pack index version {0}; this reader knows version 2")]
    Version(u32),
    #[error("pack index is truncated: {0} bytes, the header says at least {1}")]
    Truncated(usize, usize),
    #[error("pack index fan-out is not ascending")]
    BadFanout,
    #[error("pack index refers to large offset {0} of {1}")]
    BadLargeOffset(usize, usize),
}

/// A parsed version 2 pack index, borrowing its bytes.
#[derive(Debug)]
pub struct PackIndex<'a> {
    fanout: [u32; 256],
    oids: &'a [u8],
    offsets: &'a [u8],
    large: &'a [u8],
}

impl<'a> PackIndex<'a> {
    /// Check the header and the table sizes of `bytes`, an `.idx` file.
    pub fn parse(bytes: &'a [u8]) -> Result<PackIndex<'a>, IndexError> {
        if bytes.len() < 8 || bytes[..4] != MAGIC {
            return Err(IndexError::NotVersion2);
        }
        let version = be32(&bytes[4..8]);
        if version != 2 {
            return Err(IndexError::Version(version));
        }
        if bytes.len() < HEADER_BYTES {
            return Err(IndexError::Truncated(bytes.len(), HEADER_BYTES));
        }
        let mut fanout = [0u32; 256];
        for (i, slot) in fanout.iter_mut().enumerate() {
            *slot = be32(&bytes[8 + 4 * i..]);
        }
        if fanout.windows(2).any(|w| w[0] > w[1]) {
            return Err(IndexError::BadFanout);
        }
        let n = fanout[255] as usize;
        let oids_at = HEADER_BYTES;
        let offsets_at = oids_at + n * (OID_BYTES + 4);
        let large_at = offsets_at + n * 4;
        // The two checksums close the file; the large offsets sit between.
        let trailer = 2 * OID_BYTES;
        if bytes.len() < large_at + trailer {
            return Err(IndexError::Truncated(bytes.len(), large_at + trailer));
        }
        Ok(PackIndex {
            fanout,
            oids: &bytes[oids_at..oids_at + n * OID_BYTES],
            offsets: &bytes[offsets_at..large_at],
            large: &bytes[large_at..bytes.len() - trailer],
        })
    }

    /// How many objects the pack holds.
    pub fn len(&self) -> usize {
        self.fanout[255] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The offset of `oid` in the pack, if the pack holds it.
    pub fn offset(&self, oid: &[u8]) -> Result<Option<u64>, IndexError> {
        let Some(&first) = oid.first() else {
            return Ok(None);
        };
        let lo = match first {
            0 => 0,
            b => self.fanout[b as usize - 1] as usize,
        };
        let hi = self.fanout[first as usize] as usize;
        let (mut lo, mut hi) = (lo, hi);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let at = &self.oids[mid * OID_BYTES..(mid + 1) * OID_BYTES];
            match at.cmp(oid) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return self.offset_at(mid).map(Some),
            }
        }
        Ok(None)
    }

    fn offset_at(&self, i: usize) -> Result<u64, IndexError> {
        let small = be32(&self.offsets[i * 4..]);
        if small & 0x8000_0000 == 0 {
            return Ok(u64::from(small));
        }
        let k = (small & 0x7fff_ffff) as usize;
        let count = self.large.len() / 8;
        if k >= count {
            return Err(IndexError::BadLargeOffset(k, count));
        }
        let b = &self.large[k * 8..k * 8 + 8];
        Ok(u64::from(be32(b)) << 32 | u64::from(be32(&b[4..])))
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Where an object sits: (pack number, offset in that pack). Packs are numbered in the
/// order of their index file names; what matters is that one pack's objects go together.
pub type Position = (usize, u64);

/// The position of each of `oids` in the packs under `objects_dir/pack`, `None` for those
/// found in no index. Never fails: an index that cannot be read or parsed is passed over
/// (ordering is only an optimisation).
pub fn positions(objects_dir: &Path, oids: &[Oid]) -> Vec<Option<Position>> {
    let mut out = vec![None; oids.len()];
    if oids.is_empty() {
        return out;
    }
    for (pack, path) in index_files(objects_dir).iter().enumerate() {
        let Some(bytes) = read_index(path) else {
            continue;
        };
        let Ok(index) = PackIndex::parse(&bytes) else {
            continue;
        };
        let mut missing = false;
        for (slot, oid) in out.iter_mut().zip(oids) {
            if slot.is_some() {
                continue;
            }
            match index.offset(oid.as_bytes()) {
                Ok(Some(offset)) => *slot = Some((pack, offset)),
                Ok(None) => missing = true,
                // A corrupt table: leave the rest of this pack unordered.
                Err(_) => break,
            }
        }
        if !missing {
            break;
        }
    }
    out
}

/// `objects_dir/pack/*.idx`, sorted by name.
fn index_files(objects_dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(objects_dir.join("pack")) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "idx"))
        .collect();
    files.sort();
    files
}

fn read_index(path: &Path) -> Option<Vec<u8>> {
    let size = std::fs::metadata(path).ok()?.len();
    if size > MAX_INDEX_BYTES {
        return None;
    }
    std::fs::read(path).ok()
}

/// The indices of `positions` in reading order: by pack, then by offset; those in no
/// pack last, in their given order.
pub fn reading_order(positions: &[Option<Position>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..positions.len()).collect();
    // Stable: equal keys (the unpacked) keep their order.
    order.sort_by_key(|&i| match positions[i] {
        Some((pack, offset)) => (0, pack, offset),
        None => (1, 0, 0),
    });
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run git (is it installed?): {e}"));
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A repository with deltas (files edited over commits), packed by `git gc`.
    fn packed_repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        git(p, &["init", "-q"]);
        for round in 0..3 {
            for i in 0..40 {
                let body: String = (0..30)
                    .map(|l| format!("line {l} of file {i}: value {}\n", l * round))
                    .collect();
                std::fs::write(p.join(format!("f{i}.yaml")), body).unwrap();
            }
            git(p, &["add", "-A"]);
            git(
                p,
                &[
                    "-c",
                    "user.name=T",
                    "-c",
                    "user.email=t@example.com",
                    "commit",
                    "-qm",
                    &format!("round {round}"),
                ],
            );
        }
        git(p, &["gc", "-q", "--aggressive"]);
        dir
    }

    /// `git show-index`: the offset of every object, as git reads the index.
    fn show_index(idx: &Path) -> Vec<(u64, String)> {
        let bytes = std::fs::read(idx).unwrap();
        let mut child = Command::new("git")
            .args(["show-index"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let mut parts = l.split_whitespace();
                let offset = parts.next().unwrap().parse().unwrap();
                (offset, parts.next().unwrap().to_owned())
            })
            .collect()
    }

    #[test]
    fn the_offsets_read_from_a_git_gc_index_are_those_git_reports() {
        let dir = packed_repo();
        let objects = dir.path().join(".git/objects");
        let idx = index_files(&objects);
        assert_eq!(idx.len(), 1, "git gc writes one pack: {idx:?}");
        let expected = show_index(&idx[0]);
        // 3 commits, 3 trees, 120 blobs.
        assert_eq!(expected.len(), 126);
        let bytes = std::fs::read(&idx[0]).unwrap();
        let index = PackIndex::parse(&bytes).unwrap();
        assert_eq!(index.len(), expected.len());
        for (offset, hex) in &expected {
            let oid = Oid::from_str(hex).unwrap();
            assert_eq!(index.offset(oid.as_bytes()), Ok(Some(*offset)), "{hex}");
        }
        let absent = Oid::from_str("0123456789abcdef0123456789abcdef01234567").unwrap();
        assert_eq!(index.offset(absent.as_bytes()), Ok(None));

        // positions() over the directory agrees, and orders by offset.
        let oids: Vec<Oid> = expected
            .iter()
            .rev()
            .map(|(_, h)| Oid::from_str(h).unwrap())
            .chain([absent])
            .collect();
        let found = positions(&objects, &oids);
        assert_eq!(found.last(), Some(&None));
        let order = reading_order(&found);
        assert_eq!(
            order.last(),
            Some(&(oids.len() - 1)),
            "the unpacked come last"
        );
        let offsets: Vec<u64> = order[..order.len() - 1]
            .iter()
            .map(|&i| found[i].unwrap().1)
            .collect();
        let mut sorted: Vec<u64> = expected.iter().map(|(o, _)| *o).collect();
        sorted.sort();
        assert_eq!(offsets, sorted);
    }

    #[test]
    fn large_offsets_are_read_from_their_own_table() {
        // One object whose 4-byte offset points into the 8-byte table.
        let mut bytes = MAGIC.to_vec();
        bytes.extend(2u32.to_be_bytes());
        let oid = [0xabu8; OID_BYTES];
        for b in 0..256u32 {
            bytes.extend(u32::from(b >= 0xab).to_be_bytes());
        }
        bytes.extend(oid);
        bytes.extend(0u32.to_be_bytes()); // crc
        bytes.extend(0x8000_0000u32.to_be_bytes());
        bytes.extend((5u64 << 32 | 7).to_be_bytes());
        bytes.extend([0u8; 2 * OID_BYTES]);
        let index = PackIndex::parse(&bytes).unwrap();
        assert_eq!(index.offset(&oid), Ok(Some(5 << 32 | 7)));
        // The same index pointing past its table is an error, not a panic.
        let at = HEADER_BYTES + OID_BYTES + 4;
        bytes[at..at + 4].copy_from_slice(&0x8000_0001u32.to_be_bytes());
        let index = PackIndex::parse(&bytes).unwrap();
        assert_eq!(index.offset(&oid), Err(IndexError::BadLargeOffset(1, 1)));
    }

    #[test]
    fn what_is_not_a_version_2_index_is_refused() {
        assert_eq!(
            PackIndex::parse(b"PACK").unwrap_err(),
            IndexError::NotVersion2
        );
        let mut v3 = MAGIC.to_vec();
        v3.extend(3u32.to_be_bytes());
        assert_eq!(PackIndex::parse(&v3).unwrap_err(), IndexError::Version(3));
        let mut short = MAGIC.to_vec();
        short.extend(2u32.to_be_bytes());
        short.extend([0u8; 1024]);
        short[HEADER_BYTES - 4..].copy_from_slice(&9u32.to_be_bytes());
        assert!(matches!(
            PackIndex::parse(&short),
            Err(IndexError::Truncated(..))
        ));
    }
}
