//! What detection found, in the `diagnoses` family: anomalies (one diagnosis on one
//! target, open to resolved) and incidents (anomalies grouped across the fleet).
//!
//! | key | value |
//! |---|---|
//! | `a` + id | version byte, then the wire's `Anomaly` (protobuf) |
//! | `i` + id | version byte, then the wire's `Incident` (protobuf) |
//!
//! Ids are 16 hex digits, the opening time in Unix milliseconds then a counter (see
//! [`super::captures::new_id`]), so a reverse scan lists the newest first. Records are
//! written directly, not through the writer thread: they are few and small, and none
//! is acknowledged to a collector. A record that cannot be decoded is skipped with a
//! warning naming its key.

use goroscope_proto::v1;
use prost::Message;

use super::rocks::{CF_DIAGNOSES, WriteSet};
use super::{Storage, StorageError, records};

const ANOMALY: u8 = b'a';
const INCIDENT: u8 = b'i';

fn key(kind: u8, id: &str) -> Vec<u8> {
    let mut k = vec![kind];
    k.extend_from_slice(id.as_bytes());
    k
}

fn encode(message: &impl Message) -> Vec<u8> {
    let mut bytes = vec![records::VERSION];
    message.encode(&mut bytes).expect("a Vec grows as needed");
    bytes
}

fn decode<M: Message + Default>(data: &[u8]) -> Option<M> {
    match data.first() {
        Some(1..=records::VERSION) => M::decode(&data[1..]).ok(),
        _ => None,
    }
}

impl Storage {
    /// Stores anomalies and incidents (new or changed) in one write. Blocking.
    pub fn put_diagnoses(
        &self,
        anomalies: &[v1::Anomaly],
        incidents: &[v1::Incident],
    ) -> Result<(), StorageError> {
        let mut set = WriteSet::default();
        for a in anomalies {
            set.put(CF_DIAGNOSES, key(ANOMALY, &a.id), encode(a));
        }
        for i in incidents {
            set.put(CF_DIAGNOSES, key(INCIDENT, &i.id), encode(i));
        }
        if set.is_empty() {
            return Ok(());
        }
        self.engine.commit(set)
    }

    /// Anomalies newest first that `keep` accepts, at most `limit`. Blocking.
    pub fn list_anomalies(
        &self,
        limit: usize,
        keep: impl FnMut(&v1::Anomaly) -> bool,
    ) -> Result<Vec<v1::Anomaly>, StorageError> {
        self.list(ANOMALY, limit, keep)
    }

    /// Incidents newest first that `keep` accepts, at most `limit`. Blocking.
    pub fn list_incidents(
        &self,
        limit: usize,
        keep: impl FnMut(&v1::Incident) -> bool,
    ) -> Result<Vec<v1::Incident>, StorageError> {
        self.list(INCIDENT, limit, keep)
    }

    /// One incident. Blocking.
    pub fn incident(&self, id: &str) -> Result<Option<v1::Incident>, StorageError> {
        Ok(self
            .engine
            .get(CF_DIAGNOSES, &key(INCIDENT, id))?
            .and_then(|v| decode(&v)))
    }

    /// Deletes anomalies and incidents resolved before `before_ms`; how many. Blocking.
    pub fn forget_diagnoses(&self, before_ms: i64) -> Result<usize, StorageError> {
        let mut set = WriteSet::default();
        let mut gone = 0;
        for a in self.list_anomalies(usize::MAX, |a| {
            a.resolved_ms != 0 && a.resolved_ms < before_ms
        })? {
            set.delete(CF_DIAGNOSES, key(ANOMALY, &a.id));
            gone += 1;
        }
        for i in self.list_incidents(usize::MAX, |i| {
            i.resolved_ms != 0 && i.resolved_ms < before_ms
        })? {
            set.delete(CF_DIAGNOSES, key(INCIDENT, &i.id));
            gone += 1;
        }
        if gone > 0 {
            self.engine.commit(set)?;
        }
        Ok(gone)
    }

    fn list<M: Message + Default>(
        &self,
        kind: u8,
        limit: usize,
        mut keep: impl FnMut(&M) -> bool,
    ) -> Result<Vec<M>, StorageError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.engine
            .scan_range_rev(CF_DIAGNOSES, &[kind], &[kind + 1], usize::MAX, |k, v| {
                match decode::<M>(v) {
                    Some(m) if keep(&m) => out.push(m),
                    Some(_) => {}
                    None => tracing::warn!(
                        key = %String::from_utf8_lossy(k),
                        "skipping a diagnosis record that cannot be decoded"
                    ),
                }
                Ok(out.len() < limit)
            })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageOptions;

    #[test]
    fn diagnoses_round_trip_newest_first_and_survive_a_bad_record() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, guard, _) = Storage::open(dir.path(), StorageOptions::default()).unwrap();
        let anomaly = |id: &str, resolved_ms: i64| v1::Anomaly {
            id: id.into(),
            diagnosis: "goroutine-leak".into(),
            evidence_json: r#"{"slope_per_min":1.5}"#.into(),
            advice: String::new(),
            resolved_ms,
            ..Default::default()
        };
        let incident = v1::Incident {
            id: "0000000000020000".into(),
            severity: f64::NAN,
            anomalies: vec![anomaly("0000000000010000", 0)],
            ..Default::default()
        };
        storage
            .put_diagnoses(
                &[
                    anomaly("0000000000010000", 0),
                    anomaly("0000000000030000", 5),
                ],
                std::slice::from_ref(&incident),
            )
            .unwrap();
        // A damaged record costs only itself.
        let mut set = WriteSet::default();
        set.put(
            CF_DIAGNOSES,
            key(ANOMALY, "0000000000020000"),
            vec![0xff, 1, 2],
        );
        storage.engine.commit(set).unwrap();

        let all = storage.list_anomalies(10, |_| true).unwrap();
        let ids: Vec<_> = all.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["0000000000030000", "0000000000010000"]);
        let open = storage.list_anomalies(10, |a| a.resolved_ms == 0).unwrap();
        assert_eq!(open.len(), 1);
        let back = storage.incident(&incident.id).unwrap().unwrap();
        assert!(back.severity.is_nan());
        assert_eq!(back.anomalies.len(), 1);
        assert_eq!(storage.list_incidents(0, |_| true).unwrap().len(), 0);

        assert_eq!(storage.forget_diagnoses(10).unwrap(), 1);
        assert_eq!(storage.list_anomalies(10, |_| true).unwrap().len(), 1);
        drop(storage);
        guard.stop();
    }
}
