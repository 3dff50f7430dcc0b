//! `cargo bench --bench load -- console`: the web console in headless Chromium against the
//! release server, with a workspace of 10,000 tickets:
//! - what the first screen (the queue) costs on the wire: JavaScript and CSS as sent
//!   (compressed), beside the note editor's chunk, which must arrive only when a note opens;
//! - navigation to the queue showing 50 tickets (50 loaded into the list, the rows in view
//!   drawn), cold and warm, beside the floor: the same browser navigating to `/health`, and
//!   the API call the queue makes, timed from this process;
//! - scrolling the queue through all 10,000 tickets (pages of 100 load as it goes; only the
//!   rows in view exist): frame times, beside the same page's frames when idle;
//! - a live event's way into an open queue: from the write's answer (here) to the row in the
//!   DOM (a MutationObserver timestamp in the page), p50/p99 over 100 writes, beside a raw
//!   SSE client in this process receiving the same events.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde_json::{Value, json};

use super::browser::Driver;
use super::{ServerProc, admin_and_workspace, client, post};

const TICKETS: usize = 10_000;
const LIVE: usize = 100;

fn epoch_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Runs in the page before the app: records when the queue first holds 50 tickets.
const READY_PROBE: &str = "new MutationObserver((_, o) => { const l = document.querySelector('ol.list');
  if (l && Number(l.dataset.count) >= 50 && l.querySelector('li')) { window.__queueReady = performance.now(); o.disconnect(); } })
  .observe(document, { subtree: true, childList: true, attributes: true });";

pub async fn bench_console(dir: &Path) {
    let Some(driver) = Driver::start().await else {
        println!("console: skipped (chromium and chromedriver are needed)");
        return;
    };
    let http = client(16);
    let server = ServerProc::start(&dir.join("data")).await;
    let base = server.base.clone();
    let (token, ws) = admin_and_workspace(&http, &base).await;
    let seeding = std::time::Instant::now();
    futures::stream::iter(0..TICKETS)
        .for_each_concurrent(16, |i| {
            let (http, base, token, ws) = (&http, &base, &token, &ws);
            async move {
                post(
                    http,
                    format!("{base}/api/workspaces/{ws}/tickets"),
                    Some(token),
                    json!({ "title": format!("Seeded ticket {i}: printer on fire") }),
                )
                .await;
            }
        })
        .await;
    eprintln!("seeded {TICKETS} tickets in {:.1} s", seeding.elapsed().as_secs_f64());

    let b = driver.browser(&base).await;
    b.sign_in("bench@example.com", super::PASSWORD).await;
    b.client
        .issue_cmd(super::browser::Raw::cdp("Page.addScriptToEvaluateOnNewDocument", json!({ "source": READY_PROBE })))
        .await
        .expect("probe installed");
    // The network cache is cleared so the first load is a newcomer's.
    b.client.issue_cmd(super::browser::Raw::cdp("Network.clearBrowserCache", json!({}))).await.expect("cache cleared");
    b.performance_log().await;

    // 1. The first screen, cold.
    let queue = format!("/w/{ws}");
    let mut loads = Vec::new();
    for round in 0..21 {
        b.goto(&queue).await;
        let ready = b.until("window.__queueReady", "the queue shows 50 tickets").await.as_f64().unwrap_or(f64::NAN);
        if round == 0 {
            let sizes = b.transfer_sizes().await;
            let (mut js, mut css, mut editor) = (0u64, 0u64, 0u64);
            for (url, kind, bytes) in &sizes {
                if url.contains("NoteEditor") {
                    editor += bytes;
                } else if kind == "Script" {
                    js += bytes;
                } else if kind == "Stylesheet" {
                    css += bytes;
                }
            }
            println!(
                "console first screen (queue, cold cache): JavaScript {:.1} KB + CSS {:.1} KB sent = {:.1} KB (target ≤ 200 KB); note editor bytes on this screen: {editor}",
                js as f64 / 1000.0,
                css as f64 / 1000.0,
                (js + css) as f64 / 1000.0
            );
            println!("console navigation → queue showing 50 tickets, cold cache: {ready:.0} ms (target ≤ 500 ms)");
        } else {
            loads.push(ready);
        }
    }
    loads.sort_by(f64::total_cmp);
    let mut floor = Vec::new();
    for _ in 0..20 {
        b.goto("/health").await;
        floor.push(b.eval("return performance.getEntriesByType('navigation')[0].duration;").await.as_f64().unwrap_or(f64::NAN));
    }
    floor.sort_by(f64::total_cmp);
    let mut api = Vec::new();
    for _ in 0..20 {
        let started = std::time::Instant::now();
        let res = http.get(format!("{base}/api/workspaces/{ws}/tickets?limit=100")).bearer_auth(&token).send().await.expect("list");
        let _ = res.bytes().await.expect("body");
        api.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    api.sort_by(f64::total_cmp);
    println!(
        "console navigation → queue showing 50 tickets, warm (20 loads): p50 {:.0} ms, p99 {:.0} ms; floor: the browser loading /health p50 {:.1} ms, the queue's API call (100 tickets) from this process p50 {:.1} ms",
        pct(&loads, 0.5),
        pct(&loads, 0.99),
        pct(&floor, 0.5),
        pct(&api, 0.5)
    );

    // 2. Scrolling through every ticket: one `scrollBy` per frame until all are loaded and
    // the end is reached, each frame's time noted (requestAnimationFrame), beside idle frames.
    b.goto(&queue).await;
    b.until("window.__queueReady", "the queue").await;
    let idle = b
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1]; const f = []; let last = performance.now(); const start = last;
             const step = t => { f.push(t - last); last = t; if (t - start > 2000) done(f); else requestAnimationFrame(step); };
             requestAnimationFrame(step);",
            vec![],
        )
        .await
        .expect("idle frames");
    let scrolled = b
        .client
        .execute_async(
            &format!(
                "const done = arguments[arguments.length - 1]; const f = []; let last = performance.now(); const start = last;
                 const step = t => {{ f.push(t - last); last = t; scrollBy(0, 1600);
                   const n = Number(document.querySelector('ol.list').dataset.count);
                   if (n >= {TICKETS} && scrollY + innerHeight >= document.documentElement.scrollHeight - 2) done({{ f, ms: t - start, n }});
                   else if (t - start > 25000) done({{ f, ms: t - start, n, unfinished: true }});
                   else requestAnimationFrame(step); }};
                 requestAnimationFrame(step);"
            ),
            vec![],
        )
        .await
        .expect("scrolled");
    let frames = |v: &Value| {
        let mut f: Vec<f64> = v.as_array().into_iter().flatten().filter_map(Value::as_f64).skip(1).collect();
        f.sort_by(f64::total_cmp);
        f
    };
    let (idle, moving) = (frames(&idle), frames(&scrolled["f"]));
    let rows_drawn = b.eval("return document.querySelectorAll('ol.list li').length;").await;
    println!(
        "console scrolling the queue through {} tickets in {:.1} s ({} frames{}): frame p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} frames over 50 ms; idle frames on the same page p50 {:.1} ms, p99 {:.1} ms; rows in the DOM at the end: {rows_drawn}",
        scrolled["n"],
        scrolled["ms"].as_f64().unwrap_or(f64::NAN) / 1000.0,
        moving.len(),
        if scrolled["unfinished"] == json!(true) { ", did NOT reach the end" } else { "" },
        pct(&moving, 0.5),
        pct(&moving, 0.99),
        moving.last().copied().unwrap_or(f64::NAN),
        moving.iter().filter(|f| **f > 50.0).count(),
        pct(&idle, 0.5),
        pct(&idle, 0.99)
    );

    // 3. The note editor arrives only with a note.
    b.goto(&queue).await;
    b.until("window.__queueReady", "the queue").await;
    b.performance_log().await;
    b.click("ol.list a").await;
    b.wait("section.note button").await;
    let before: u64 = b.transfer_sizes().await.iter().filter(|(u, _, _)| u.contains("NoteEditor")).map(|(_, _, n)| n).sum();
    b.click("section.note button").await;
    b.wait("[data-testid=note-editor] .ProseMirror").await;
    let after: u64 = b.transfer_sizes().await.iter().filter(|(u, _, _)| u.contains("NoteEditor")).map(|(_, _, n)| n).sum();
    println!("console note editor: {before} bytes of it with the ticket, {:.1} KB sent when the note opens", after as f64 / 1000.0);

    // 4. Live events into an open queue, beside a raw SSE client.
    b.goto(&queue).await;
    b.until("window.__queueReady", "the queue").await;
    b.eval(
        "window.__seen = {}; new MutationObserver(ms => { const t = performance.timeOrigin + performance.now();
           for (const m of ms) for (const n of m.addedNodes) { const s = n.textContent || ''; const k = s.match(/live-(\\d+)-end/);
             if (k && !(k[1] in window.__seen)) window.__seen[k[1]] = t; } })
           .observe(document.querySelector('ol.list'), { subtree: true, childList: true }); return true;",
    )
    .await;
    let raw = raw_sse(&http, &base, &token, &ws).await;
    let mut answers = Vec::new();
    for i in 0..LIVE {
        post(&http, format!("{base}/api/workspaces/{ws}/tickets"), Some(&token), json!({ "title": format!("live-{i}-end") })).await;
        answers.push(epoch_ms());
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    b.until(&format!("Object.keys(window.__seen).length >= {LIVE}"), "every live ticket reached the queue").await;
    let seen = b.eval("return window.__seen;").await;
    let mut dom: Vec<f64> = (0..LIVE).map(|i| seen[i.to_string()].as_f64().unwrap_or(f64::NAN) - answers[i]).collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = raw.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut sse: Vec<f64> = (0..LIVE).filter_map(|i| got.get(&i).map(|t| t - answers[i])).collect();
    dom.sort_by(f64::total_cmp);
    sse.sort_by(f64::total_cmp);
    println!(
        "console live event, write's answer → row in the open queue ({LIVE} events): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; raw SSE client in this process: p50 {:.1} ms, p99 {:.1} ms ({} received)",
        pct(&dom, 0.5),
        pct(&dom, 0.99),
        dom.last().copied().unwrap_or(f64::NAN),
        pct(&sse, 0.5),
        pct(&sse, 0.99),
        sse.len()
    );
    b.close().await;
    server.stop().await;
}

type Arrivals = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<usize, f64>>>;

/// An SSE client on the workspace's stream that notes when each `live-N-end` ticket arrives.
async fn raw_sse(http: &reqwest::Client, base: &str, token: &str, ws: &str) -> Arrivals {
    let arrivals: Arrivals = Default::default();
    let res = http.get(format!("{base}/api/workspaces/{ws}/events")).bearer_auth(token).send().await.expect("stream");
    let mut body = res.bytes_stream();
    let sink = arrivals.clone();
    tokio::spawn(async move {
        let mut buffer = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            let at = epoch_ms();
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: "))
                    && let Ok(event) = serde_json::from_str::<Value>(data)
                    && let Some(n) =
                        event["data"]["title"].as_str().and_then(|t| t.strip_prefix("live-")).and_then(|t| t.strip_suffix("-end"))
                    && let Ok(n) = n.parse::<usize>()
                {
                    sink.lock().unwrap_or_else(|p| p.into_inner()).entry(n).or_insert(at);
                }
            }
        }
    });
    arrivals
}
