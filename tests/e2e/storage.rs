//! The storage as operators see it through `goroscope status`.

use goroscope_tests::*;

use super::STARTUP;

/// `goroscope status -o json` names what is stored and the collector feeding it, and
/// its counts move as samples arrive.
#[test]
fn status_reports_what_is_stored_and_each_collector() {
    let steady = Workload::start("steady", &[]);
    let (certs, _data, agg, _collector) = start_stack("e2e-status", "");
    let url = agg.url();
    let first = eventually(
        STARTUP,
        "samples stored and the collector connected",
        || {
            let v = goroscope_json(&certs, &url, &["status"]);
            let host = v["collectors"]
                .as_array()?
                .iter()
                .find(|c| c["host"] == "e2e-status")?
                .clone();
            (v["samples_stored"].as_u64()? > 0
                && host["connected"] == true
                && host["targets"].as_u64()? >= 1)
                .then_some((v, host))
        },
    );
    let (v, host) = first;
    for key in ["samples_stored", "disk_bytes", "series", "targets"] {
        assert!(v[key].is_u64(), "{key} in {v}");
    }
    assert!(v["series"].as_u64().unwrap() > 10, "{v}");
    assert!(v["targets"].as_u64().unwrap() >= 1, "{v}");
    assert!(host["batches"].as_u64().unwrap() >= 1, "{host}");
    assert!(host["last_heard_ms"].as_i64().unwrap() > 0, "{host}");
    assert_eq!(host["gaps"], 0, "{host}");
    assert!(
        v["services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["service"] == "steady" && s["live"].as_u64() >= Some(1)),
        "{v}"
    );
    assert!(v["coverage"]["proc"].as_u64() >= Some(1), "{v}");
    let before = v["samples_stored"].as_u64().unwrap();
    eventually(STARTUP, "more samples stored", || {
        let v = goroscope_json(&certs, &url, &["status"]);
        (v["samples_stored"].as_u64()? > before).then_some(())
    });
    // The table names the host too.
    let out = goroscope(&certs, &url, None, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("e2e-status"),
        "{text}"
    );
    drop(steady);
}
