//! The admin status page, loaded in headless Chromium: a region turning down changes its marker
//! on the map and its row, adds a row to the timeline and moves the answers' share of its
//! clients' continent. A screenshot is kept as a test artifact.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use crate::common::{
    Server, ZONE,
    endpoint::{Endpoint, Mode},
    query, udp,
};
use hickory_proto::rr::RecordType;

/// The page as Chromium renders it (the DOM after load).
fn render(chromium: &str, url: &str) -> String {
    let (mut command, _profile) = chromium_command(chromium);
    let output = command
        .args(["--dump-dom", url])
        .output()
        .expect("run chromium");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A PNG of the page, kept in target/test-artifacts/.
fn screenshot(chromium: &str, url: &str, name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map_or_else(|| "target".into(), |t| t.join("test-artifacts"));
    std::fs::create_dir_all(&dir).expect("artifact dir");
    let path = dir.join(name);
    let (mut command, _profile) = chromium_command(chromium);
    let status = command
        .arg(format!("--screenshot={}", path.display()))
        .args(["--window-size=1200,1700", url])
        .output()
        .expect("run chromium");
    assert!(status.status.success(), "{status:?}");
    path
}

/// Chromium with a fresh profile (removed when the returned directory is dropped).
fn chromium_command(chromium: &str) -> (Command, tempfile::TempDir) {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut command = Command::new(chromium);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-domain-reliability",
            "--no-default-browser-check",
            // The page is addressed by IP: no name may resolve, so nothing leaves loopback.
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()));
    (command, profile)
}

/// Asks for the service as `count` clients of London's network.
fn londoners(server: &Server, count: usize) {
    for _ in 0..count {
        udp(
            server.addr,
            &query("api.llm.example.com.", RecordType::A, Some("81.2.69.0/24")),
        );
    }
}

/// The share shown for clients of `continent` answered by `region`, in percent.
fn share(page: &str, continent: &str, region: &str) -> Option<u32> {
    let row =
        format!("<tr data-continent=\"{continent}\" data-region=\"llm.example.com./{region}\">");
    let rest = &page[page.find(&row)?..];
    let cell = rest.split("<td class=\"share\">").nth(1)?;
    cell.split('%').next()?.parse().ok()
}

fn chromium() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(String::from)
}

#[test]
fn the_status_page_shows_a_region_turning_down() {
    let Some(chromium) = chromium() else {
        // CI installs Chromium (scripts/test): there a missing browser is a failure, never a
        // silent pass. On a developer's machine without it the test says it did not run.
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is not installed: scripts/test installs it (apt-get install chromium)"
        );
        eprintln!(
            "SKIPPED: chromium is not installed (scripts/test installs it; apt-get install chromium)"
        );
        return;
    };
    let eu = Endpoint::start(Mode::Ok);
    let check = format!(
        "{{ http: \"{}\", interval: 200ms, timeout: 150ms, fall: 2, rise: 2 }}",
        eu.url()
    );
    let zone = ZONE.replace(
        "    addresses: [203.0.113.20, \"2001:db8:20::1\"]",
        &format!("    addresses: [203.0.113.20]\n    check: {check}"),
    );
    let server = Server::start(&zone);
    let url = format!("http://{}/", server.admin.expect("admin"));

    londoners(&server, 20);
    let page = render(&chromium, &url);
    assert!(page.contains("<title>regiondns status</title>"), "{page}");
    assert!(
        page.contains(r#"<g id="marker-llm.example.com./eu-west" class="marker up">"#),
        "{page}"
    );
    assert_eq!(share(&page, "EU", "eu-west"), Some(100), "{page}");
    assert!(
        page.contains(
            r#"<line class="flow" data-continent="EU" data-region="llm.example.com./eu-west""#
        ),
        "{page}"
    );
    assert!(
        page.contains(r#"<path class="land" d="M"#),
        "the map has land"
    );
    assert!(page.contains(r#"<svg class="spark rate""#), "{page}");
    let changes_before = page.matches("<tr class=").count();
    assert!(
        page.contains(r#"<tr id="llm.example.com./eu-west" class="up">"#),
        "{page}"
    );
    assert!(page.contains("service api.llm.example.com."), "{page}");
    assert!(
        page.contains(r#"http-equiv="refresh""#),
        "refreshes itself: {page}"
    );

    eu.set(Mode::Fail);
    let start = Instant::now();
    loop {
        let page = render(&chromium, &url);
        if page.contains(r#"<tr id="llm.example.com./eu-west" class="down">"#) {
            assert!(
                page.contains("2 consecutive failures, last: HTTP 503"),
                "the reason: {page}"
            );
            assert!(
                page.contains(r#"<g id="marker-llm.example.com./eu-west" class="marker down">"#),
                "the marker turns down: {page}"
            );
            assert_eq!(
                page.matches("<tr class=").count(),
                changes_before + 1,
                "one more row on the timeline: {page}"
            );
            assert!(page.contains(r#"<tr class="down"><td>"#), "{page}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never shown down: {page}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // London's clients now go to Virginia: Europe's share moves.
    londoners(&server, 60);
    let page = render(&chromium, &url);
    assert_eq!(share(&page, "EU", "us-east"), Some(75), "{page}");
    assert_eq!(share(&page, "EU", "eu-west"), Some(25), "{page}");
    let png = screenshot(&chromium, &url, "status-page.png");
    let bytes = std::fs::read(&png).expect("the screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
        "{}",
        png.display()
    );
    eprintln!("screenshot: {}", png.display());
}
