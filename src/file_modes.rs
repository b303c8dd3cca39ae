//! Who may open a token directory's files. A store made by root for a
//! daemon's service user (nginx workers, a systemd service) is shared through
//! a group: `softmhsm init --group G` makes the token directory `G`-owned,
//! mode 2770 (setgid: files created later inherit the group), and its files
//! 0660. The library reads the rule back from the directory: in a directory
//! whose group may read, write and search, the files it creates (the store,
//! SQLite's `-wal`/`-shm`, the change signal, the audit log) are 0660, else
//! 0600. Others never get a bit.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// The mode for a file created in `dir`: 0660 when the directory is shared
/// with its group (group bits rwx), else 0600.
pub fn file_mode(dir: &Path) -> u32 {
    match std::fs::metadata(dir) {
        Ok(m) if m.mode() & 0o070 == 0o070 => 0o660,
        _ => 0o600,
    }
}

/// Share the token directory `dir` (created if missing; its parents 0755 by
/// the umask) with the group `gid`: the directory group-owned, mode 2770; each
/// file in it group-owned, with its owner's permission bits for the group and
/// none for others.
pub fn share_with_group(dir: &Path, gid: u32) -> io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    std::os::unix::fs::chown(dir, None, Some(gid))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o2770))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if !meta.is_file() {
            continue;
        }
        let owner = meta.mode() & 0o700;
        std::os::unix::fs::chown(entry.path(), None, Some(gid))?;
        std::fs::set_permissions(
            entry.path(),
            std::fs::Permissions::from_mode(owner | owner >> 3),
        )?;
    }
    Ok(())
}

/// The id of the group `name` (a number is taken as an id), from `/etc/group`.
pub fn group_id(name: &str) -> Option<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Some(gid);
    }
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    group_id_in(&groups, name)
}

/// [`group_id`] in the text of a group file.
fn group_id_in(groups: &str, name: &str) -> Option<u32> {
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next() == Some(name))
            .then(|| fields.nth(1)?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::Permissions;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn files_are_private_unless_the_directory_is_shared_with_its_group() {
        let d = tempfile::tempdir().unwrap();
        for (dir_mode, file) in [
            (0o700, 0o600),
            (0o750, 0o600),
            (0o770, 0o660),
            (0o2770, 0o660),
        ] {
            std::fs::set_permissions(d.path(), Permissions::from_mode(dir_mode)).unwrap();
            assert_eq!(file_mode(d.path()), file, "{dir_mode:o}");
        }
        assert_eq!(file_mode(&d.path().join("missing")), 0o600);
    }

    #[test]
    fn sharing_gives_the_group_the_owner_bits_and_others_none() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("parent/token");
        let gid = std::fs::metadata(d.path()).unwrap().gid();
        share_with_group(&dir, gid).unwrap();
        assert_eq!(mode(&dir), 0o2770);
        assert_eq!(
            mode(dir.parent().unwrap()) & 0o007,
            0o005,
            "parent searchable"
        );
        std::fs::write(dir.join("softmhsm.db"), b"x").unwrap();
        std::fs::set_permissions(dir.join("softmhsm.db"), Permissions::from_mode(0o600)).unwrap();
        std::fs::write(dir.join("odd"), b"x").unwrap();
        std::fs::set_permissions(dir.join("odd"), Permissions::from_mode(0o644)).unwrap();
        share_with_group(&dir, gid).unwrap();
        assert_eq!(mode(&dir.join("softmhsm.db")), 0o660);
        assert_eq!(mode(&dir.join("odd")), 0o660, "others lose their read bit");
        assert_eq!(std::fs::metadata(dir.join("odd")).unwrap().gid(), gid);
    }

    #[test]
    fn group_names_are_found_in_the_group_file() {
        let groups = "root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\nbroken:x:\n";
        assert_eq!(group_id_in(groups, "www-data"), Some(33));
        assert_eq!(group_id_in(groups, "nogroup"), Some(65534));
        assert_eq!(group_id_in(groups, "www"), None);
        assert_eq!(group_id_in(groups, "broken"), None);
        assert_eq!(group_id("4242"), Some(4242));
    }
}
