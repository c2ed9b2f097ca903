//! A rank-sharded run's plan on disk, for any stage: `WORK/plan.json`, written once and
//! compared on every re-run and by every task, and the identity that task markers carry.
//! clean's plan (six steps over corpus parts) and the CLI's plan of whole input files both
//! keep theirs here, so that a work folder of another run is refused in one wording, naming
//! what differs, and a plan is never half-written.
//!
//! ```
//! use lmforge_executor::plan;
//!
//! let work = std::env::temp_dir().join(format!("lmforge-plan-doc-{}", std::process::id()));
//! let differ = |a: &u32, b: &u32| (a != b).then(|| format!("{a} ranks there, {b} here"));
//! plan::write(&work, &4u32, differ)?;
//! plan::write(&work, &4u32, differ)?; // a re-run of the same plan
//! let err = plan::write(&work, &8u32, differ).unwrap_err().to_string();
//! assert!(err.contains("another run's plan (4 ranks there, 8 here)"), "{err}");
//! assert_eq!(plan::read::<u32>(&work, "a plan")?, 4);
//! assert_eq!(plan::id(&4u32), plan::id(&4u32));
//! # std::fs::remove_dir_all(&work).unwrap();
//! # Ok::<(), lmforge_executor::Error>(())
//! ```

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result, io};

/// `WORK/plan.json`.
pub fn path(work: &Path) -> PathBuf {
    work.join("plan.json")
}

/// Writes `plan` to `WORK/plan.json` (a temporary file renamed into place), or, when the
/// folder holds a plan already, checks that it is this one: another is refused with
/// `differences(there, here)`, or "it differs" when that finds nothing to name.
pub fn write<P>(work: &Path, plan: &P, differences: impl Fn(&P, &P) -> Option<String>) -> Result<()>
where
    P: Serialize + DeserializeOwned + PartialEq,
{
    std::fs::create_dir_all(work).map_err(io(work))?;
    let file = path(work);
    if file.exists() {
        let there: P = read(work, "a plan of this stage")?;
        if there != *plan {
            let why = differences(&there, plan).unwrap_or_else(|| "it differs".into());
            return Err(Error::Marker {
                file,
                reason: format!(
                    "the work folder holds another run's plan ({why}); use another --work \
                     folder or remove this one"
                ),
            });
        }
        return Ok(());
    }
    let json = serde_json::to_string_pretty(plan).map_err(|e| Error::Marker {
        file: file.clone(),
        reason: e.to_string(),
    })?;
    let temp = work.join(format!(".plan.json.tmp-{}", std::process::id()));
    std::fs::write(&temp, json + "\n").map_err(io(&temp))?;
    std::fs::rename(&temp, &file).map_err(io(&file))
}

/// The plan in `work`; a file that is not one is an error saying it is not `what`.
pub fn read<P: DeserializeOwned>(work: &Path, what: &str) -> Result<P> {
    let file = path(work);
    let text = std::fs::read_to_string(&file).map_err(io(&file))?;
    serde_json::from_str(&text).map_err(|e| Error::Marker {
        file,
        reason: format!("not {what} ({e})"),
    })
}

/// A plan's (or any value's) identity for the markers of its tasks: XXH3-128 of its JSON, as
/// hex — stable across builds and machines, and not a defence against tampering (the plans
/// sit in the user's own work folder).
pub fn id(value: &impl Serialize) -> String {
    bytes_id(&serde_json::to_vec(value).unwrap_or_default())
}

/// [`id`] of bytes as they are (a file's content), without a JSON encoding of them.
pub fn bytes_id(bytes: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_is_written_once_and_another_is_refused_naming_the_difference() {
        let work = std::env::temp_dir().join(format!("lmforge-plan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        let none = |_: &Vec<u8>, _: &Vec<u8>| None;
        write(&work, &vec![1u8, 2], none).unwrap();
        write(&work, &vec![1u8, 2], none).unwrap();
        let err = write(&work, &vec![1u8], none).unwrap_err().to_string();
        assert!(
            err.contains("plan.json") && err.contains("(it differs)"),
            "{err}"
        );
        // No temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(&work).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
        std::fs::write(path(&work), "{").unwrap();
        let err = read::<Vec<u8>>(&work, "a cleaning plan").unwrap_err();
        assert!(err.to_string().contains("not a cleaning plan"), "{err}");
        assert_ne!(id(&vec![1u8]), id(&vec![2u8]));
        assert_eq!(id(&vec![1u8]).len(), 32);
        std::fs::remove_dir_all(&work).unwrap();
    }
}
