//! Key bundles and client-side encrypted attachments over HTTP, on both backends: the
//! version rule (409 on a stale or skipped version, one winner among racing writers), old
//! versions readable, only public keys visible to other members (and to requesters only
//! staff members'), and an encrypted version's wrapped-key fields round-tripping byte for
//! byte while its ciphertext is never type-sniffed.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::{RngExt, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};

use crate::attachments::{png, upload};
use crate::common::{TestServer, both_backends};

/// Random bytes of the sizes real keys have (X25519: 32; ML-KEM-768: a 1,184-byte public
/// key, a 1,088-byte ciphertext), as base64 in both alphabets.
fn b64(rng: &mut rand::rngs::StdRng, len: usize, url_safe: bool) -> String {
    let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
    if url_safe { URL_SAFE_NO_PAD.encode(bytes) } else { STANDARD.encode(bytes) }
}

fn bundle(rng: &mut rand::rngs::StdRng, version: u32) -> Value {
    json!({
        "classical_public_key": b64(rng, 32, false),
        "pq_public_key": b64(rng, 1_184, false),
        "classical_priv_encrypted": b64(rng, 60, true),
        "pq_priv_encrypted": b64(rng, 2_428, false),
        "key_version": version,
    })
}

/// `url` with `name` (unless empty) and an encryption header's fields as its query.
fn with_query(url: &str, name: &str, header: &Value) -> reqwest::Url {
    let mut pairs: Vec<(String, String)> = header
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (format!("encryption[{k}]"), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
        .collect();
    if !name.is_empty() {
        pairs.push(("name".into(), name.into()));
    }
    reqwest::Url::parse_with_params(url, &pairs).unwrap()
}

fn same_fields(got: &Value, sent: &Value) {
    for field in ["classical_public_key", "pq_public_key", "classical_priv_encrypted", "pq_priv_encrypted", "key_version"] {
        assert_eq!(got[field], sent[field], "{field}");
    }
}

both_backends! {
    async fn key_bundles_follow_the_version_rule_and_show_only_public_keys_to_others(b: Backend) {
        let s = TestServer::start_with(b, crate::common::relaxed_limits(), |_| {}).await;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let admin = s.admin().await;
        let agent = s.user(&admin, "agent").await;
        let customer = s.user(&admin, "customer").await;
        let other = s.user(&admin, "other").await;
        let stranger = s.user(&admin, "stranger").await;
        let ws = s.workspace(&admin, "Keys").await;
        s.add_member(&admin, &ws, &agent, "agent").await;
        s.add_member(&admin, &ws, &customer, "requester").await;
        s.add_member(&admin, &ws, &other, "requester").await;
        let put = |token: String, body: Value| {
            let s = &s;
            async move { s.call(Method::PUT, "/api/me/keys", Some(&token), Some(body)).await }
        };

        s.get("/api/me/keys", &agent.token).await.problem(404);
        put(agent.token.clone(), bundle(&mut rng, 2)).await.problem(409);
        let v1 = bundle(&mut rng, 1);
        let stored = put(agent.token.clone(), v1.clone()).await;
        same_fields(stored.ok(200), &v1);
        assert!(stored.body["created_at"].is_string(), "{}", stored.body);
        // Stale (1 again) and skipped (3) versions are refused, and say what is expected.
        let stale = put(agent.token.clone(), bundle(&mut rng, 1)).await;
        stale.problem(409);
        assert!(stale.body["detail"].as_str().unwrap().contains("must be 2"), "{}", stale.body);
        put(agent.token.clone(), bundle(&mut rng, 3)).await.problem(409);
        // Bad shapes are 422 and change nothing.
        let mut bad = bundle(&mut rng, 2);
        bad["pq_public_key"] = json!("not base64!");
        put(agent.token.clone(), bad).await.problem(422);
        let mut empty = bundle(&mut rng, 2);
        empty["classical_public_key"] = json!("");
        put(agent.token.clone(), empty).await.problem(422);
        let mut extra = bundle(&mut rng, 2);
        extra["private_key"] = json!("AAAA");
        put(agent.token.clone(), extra).await.problem(422);
        let mut missing = bundle(&mut rng, 2);
        missing.as_object_mut().unwrap().remove("pq_priv_encrypted");
        put(agent.token.clone(), missing).await.problem(422);
        same_fields(s.get("/api/me/keys", &agent.token).await.ok(200), &v1);

        // Eight devices race for version 2: one wins, seven are told.
        let racers: Vec<Value> = (0..8).map(|_| bundle(&mut rng, 2)).collect();
        let results = futures::future::join_all(racers.iter().map(|b| put(agent.token.clone(), b.clone()))).await;
        let won: Vec<usize> = results.iter().enumerate().filter(|(_, r)| r.status == 200).map(|(i, _)| i).collect();
        assert_eq!(won.len(), 1, "{:?}", results.iter().map(|r| r.status).collect::<Vec<_>>());
        assert!(results.iter().all(|r| r.status == 200 || r.status == 409));
        let v2 = &racers[won[0]];
        same_fields(s.get("/api/me/keys", &agent.token).await.ok(200), v2);
        // The old version stays readable, byte for byte.
        same_fields(s.get("/api/me/keys/1", &agent.token).await.ok(200), &v1);
        s.get("/api/me/keys/3", &agent.token).await.problem(404);
        s.get("/api/me/keys/x", &agent.token).await.problem(400);

        // Others see the public half only.
        let url = |user: &str| format!("/api/workspaces/{ws}/members/{user}/keys");
        let public = s.get(&url(&agent.id), &customer.token).await.ok(200).clone();
        let mut fields: Vec<&str> = public.as_object().unwrap().keys().map(String::as_str).collect();
        fields.sort();
        assert_eq!(fields, ["classical_public_key", "key_version", "pq_public_key", "user_id"]);
        assert_eq!(public["pq_public_key"], v2["pq_public_key"]);
        assert_eq!(public["key_version"], 2);
        put(customer.token.clone(), bundle(&mut rng, 1)).await.ok(200);
        put(other.token.clone(), bundle(&mut rng, 1)).await.ok(200);
        s.get(&url(&customer.id), &agent.token).await.ok(200);
        s.get(&url(&customer.id), &customer.token).await.ok(200);
        // A requester learns nothing of another customer; a non-member nothing at all.
        s.get(&url(&other.id), &customer.token).await.problem(404);
        s.get(&url(&agent.id), &stranger.token).await.problem(404);
        put(stranger.token.clone(), bundle(&mut rng, 1)).await.ok(200);
        s.get(&url(&stranger.id), &agent.token).await.problem(404);
        s.get(&url(&admin.id), &agent.token).await.problem(404);
        // The document states the shape the server checks.
        let doc = s.call(Method::GET, "/api/openapi.json", None, None).await.ok(200).clone();
        let schemas = &doc["components"]["schemas"];
        for (schema, field) in [("NewKeyBundle", "pq_public_key"), ("EncryptionHeader", "wrapped_dek"), ("EncryptionHeader", "eph_pq_ciphertext")] {
            assert_eq!(schemas[schema]["properties"][field]["pattern"], edgedesk::http::opaque::BASE64_PATTERN, "{schema}.{field}");
        }
        s.stop().await;
    }
}

both_backends! {
    async fn encrypted_versions_round_trip_their_wrapped_keys_and_are_never_sniffed(b: Backend) {
        let s = TestServer::start_with(b, crate::common::relaxed_limits(), |_| {}).await;
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let admin = s.admin().await;
        let customer = s.user(&admin, "customer").await;
        let ws = s.workspace(&admin, "Sealed").await;
        s.add_member(&admin, &ws, &customer, "requester").await;
        let ticket = s.ticket(&customer, &ws, json!({ "title": "sealed" })).await["id"].as_str().unwrap().to_string();
        let base = format!("{}/api/workspaces/{ws}/tickets/{ticket}/attachments", s.base);
        let header = |rng: &mut rand::rngs::StdRng, version: u32| {
            json!({
                "eph_classical_public": b64(rng, 32, false),
                "eph_pq_ciphertext": b64(rng, 1_088, false),
                "wrapped_dek": b64(rng, 40, true),
                "key_version": version,
            })
        };
        // Ciphertext that happens to start like a PNG, sent as one: stored as bytes.
        let ciphertext = png(50_000);
        let first = header(&mut rng, 1);
        let res = s
            .http
            .post(with_query(&base, "sealed.png", &first))
            .bearer_auth(&customer.token)
            .header("content-type", "image/png")
            .body(ciphertext.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let created: Value = res.json().await.unwrap();
        assert_eq!(created["latest"]["content_type"], "application/octet-stream");
        assert_eq!(created["latest"]["encryption"], first);
        let one = format!("{base}/{}", created["id"].as_str().unwrap());
        let got = s.http.get(&one).bearer_auth(&customer.token).send().await.unwrap();
        assert_eq!(got.headers()["content-type"], "application/octet-stream");
        assert!(got.bytes().await.unwrap() == ciphertext, "the ciphertext, byte for byte");

        // A second version, wrapped for another key version; each keeps its own header.
        let second = header(&mut rng, 2);
        let res =
            s.http.post(with_query(&format!("{one}/versions"), "", &second)).bearer_auth(&admin.token).body(vec![9u8; 1_000]).send().await.unwrap();
        assert_eq!(res.status(), 201);
        let path = one.trim_start_matches(&s.base).to_string();
        let versions = s.get(&format!("{path}/versions"), &customer.token).await.ok(200).clone();
        assert_eq!(versions[0]["encryption"], second);
        assert_eq!(versions[1]["encryption"], first);
        // A plain version after them has none.
        let plain = upload(&s, &admin.token, &format!("{path}/versions"), "text/plain", b"plain".to_vec()).await;
        let plain: Value = plain.json().await.unwrap();
        assert!(plain["latest"]["encryption"].is_null());
        // Bootstrap carries the header with the metadata.
        let rows = s.bootstrap(&admin.token, &ws).await.1;
        assert!(rows.iter().any(|r| r["type"] == "attachment" && r["latest"]["encryption"].is_null()));

        // Half a header, a bad value, a bad version: 422, nothing stored.
        let tenant = s.app().store().tenants.open(ws.parse().unwrap()).await.unwrap();
        let used = tenant.attachments().usage().await.unwrap().used;
        let mut half = header(&mut rng, 1);
        half.as_object_mut().unwrap().remove("wrapped_dek");
        let mut not_b64 = header(&mut rng, 1);
        not_b64["eph_pq_ciphertext"] = json!("%%%");
        let mut zero = header(&mut rng, 1);
        zero["key_version"] = json!(0);
        for (bad, field) in [(half, "encryption[wrapped_dek]"), (not_b64, "encryption[eph_pq_ciphertext]"), (zero, "encryption[key_version]")] {
            let res = s
                .http
                .post(with_query(&base, "x.bin", &bad))
                .bearer_auth(&customer.token)
                .body(vec![1u8; 10])
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 422);
            let problem: Value = res.json().await.unwrap();
            assert_eq!(problem["errors"][0]["field"], field, "{problem}");
        }
        assert_eq!(tenant.attachments().usage().await.unwrap().used, used);
        s.stop().await;
    }
}
