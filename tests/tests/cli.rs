//! The commands as a user types them.

use testkit::{TestMirror, b3sum, generate};

use crate::util::{Workspace, assert_ok, publish, stderr, stdout};

const MIB: u64 = 1 << 20;

#[tokio::test]
async fn add_prints_the_b3sum_hash_alone() {
    let work = Workspace::new();
    let file = work.path("weights.bin");
    std::fs::write(&file, generate(MIB + 7, 1)).unwrap();
    let out = work.run(&["add", file.to_str().unwrap()]).await;
    assert_ok(&out);
    assert_eq!(stdout(&out), b3sum(&file));
}

#[tokio::test]
async fn a_folder_added_published_and_served_is_fetched_as_a_model_elsewhere() {
    let seed = Workspace::new();
    let model = seed.path("model");
    std::fs::create_dir_all(model.join("shards")).unwrap();
    std::fs::write(model.join("config.json"), b"{\"layers\": 2}").unwrap();
    std::fs::write(model.join("shards/a.safetensors"), generate(3 * MIB, 2)).unwrap();
    let out = seed.run(&["add", model.to_str().unwrap()]).await;
    assert_ok(&out);
    let hash = stdout(&out);

    let mirror = TestMirror::start().await;
    let out = seed
        .run(&["publish", &hash, "--dir", mirror.dir().to_str().unwrap()])
        .await;
    assert_ok(&out);
    let entry = stdout(&out);

    let leech = Workspace::new();
    let target = leech.path("fetched");
    let url = mirror.url(&entry);
    let out = leech
        .run(&[
            "fetch",
            &hash,
            "--mirror",
            &url,
            "-o",
            target.to_str().unwrap(),
        ])
        .await;
    assert_ok(&out);
    assert_eq!(
        b3sum(&target.join("config.json")),
        b3sum(&model.join("config.json"))
    );
    assert_eq!(
        b3sum(&target.join("shards/a.safetensors")),
        b3sum(&model.join("shards/a.safetensors"))
    );

    let listed = stdout(&leech.run(&["list"]).await);
    assert!(
        listed
            .lines()
            .any(|line| line.starts_with(&hash) && line.contains("model")),
        "{listed}"
    );
}

#[tokio::test]
async fn fetch_url_prints_the_hash_and_checks_the_sha256() {
    let mirror = TestMirror::start().await;
    let data = generate(2 * MIB, 3);
    let hash = publish(&mirror, "f.bin", &data, false);
    let url = mirror.url("f.bin");
    let work = Workspace::new();

    let wrong = "0".repeat(64);
    let out = work.run(&["fetch", &url, "--sha256", &wrong]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("SHA-256"), "{}", stderr(&out));

    let out = work.run(&["fetch", &url]).await;
    assert_ok(&out);
    assert_eq!(stdout(&out), hash);
}

#[tokio::test]
async fn json_progress_lines_end_with_the_result() {
    let mirror = TestMirror::start().await;
    let data = generate(4 * MIB, 4);
    let hash = publish(&mirror, "m.bin", &data, true);
    let work = Workspace::new();
    let out = work
        .run(&["fetch", &hash, "--mirror", &mirror.url("m.bin"), "--json"])
        .await;
    assert_ok(&out);
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    let last = lines.last().unwrap();
    assert_eq!(last["event"], "done");
    assert_eq!(last["hash"], hash.as_str());
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "progress" && l["total"] == 4 * MIB)
    );
}

#[tokio::test]
async fn bad_arguments_get_a_clear_error() {
    let work = Workspace::new();
    let out = work
        .run(&["fetch", "not-a-hash", "--mirror", "http://127.0.0.1:9/x"])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not a BLAKE3 hash"),
        "{}",
        stderr(&out)
    );
    let out = work
        .run(&["fetch", &"a".repeat(64), "--mirror", "ftp://host/x"])
        .await;
    assert!(
        stderr(&out).contains("not an http:// or https:// URL"),
        "{}",
        stderr(&out)
    );
    let out = work.run(&["fetch", &"a".repeat(64)]).await;
    assert!(
        stderr(&out).contains("no mirror was given"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn the_demo_runs_offline_and_checks_its_result() {
    let work = Workspace::new();
    let out = work.run(&["demo", "--size-mib", "8"]).await;
    assert_ok(&out);
    let text = stdout(&out);
    assert!(text.contains("paused with"), "{text}");
    assert!(text.contains("resumed from disk"), "{text}");
    assert!(
        text.contains("every file matches its BLAKE3 hash"),
        "{text}"
    );
}
