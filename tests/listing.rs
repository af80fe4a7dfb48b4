//! Folder listings page by page (docs/api.md, "Folders"): plain listings capped at 1,000 children with the
//! cursor in `X-Cave-Next`/`Link`, `?limit`/`?after` (a folder cursor skips the folder), `?meta=true`,
//! `?recurse`/`?tree` with `?contains=`, `?count=true`, and a token that may list only part of a folder.
//! Every node here is a prod node with access control on.

mod common;

use common::{client_with_token, expect_error, TestNode};
use serde_json::{json, Value};

/// Write `keys` (value: the key itself) through the node's API in batches.
async fn fill(node: &TestNode, keys: &[String]) {
    for chunk in keys.chunks(5_000) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|k| json!({"key": k, "verb": "set", "value": k}))
            .collect();
        let response = node
            .client
            .post(node.url("/api/v1/query"))
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_big_folder_lists_in_pages_with_the_cursor_in_headers_and_in_the_body() {
    let (_dir, node) = common::start_prod().await;
    // 2,500 keys and 3 sub-folders (one of 1,000 keys) directly in big/.
    let mut keys: Vec<String> = (0..2_500).map(|i| format!("big/k{i:05}")).collect();
    keys.extend((0..1_000).map(|i| format!("big/k00100/deep/{i}")));
    keys.extend(["big/a/x".to_string(), "big/zz/é".to_string()]);
    fill(&node, &keys).await;
    let mut expected: Vec<String> = (0..2_500).map(|i| format!("big/k{i:05}")).collect();
    expected.extend(["big/a/".into(), "big/k00100/".into(), "big/zz/".into()]);
    expected.sort();

    // The plain answer: the first 1,000, and where the rest starts.
    let response = node.client.get(node.kv("big/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let next = response.headers()["x-cave-next"].to_str().unwrap().to_string();
    let link = response.headers()["link"].to_str().unwrap().to_string();
    let first = strings(&response.json().await.unwrap());
    assert_eq!(first, expected[..1_000]);
    assert_eq!(next, encode(&expected[999]).replace("%2F", "/"));
    assert_eq!(link, format!("</api/v1/kv/big/?after={next}&limit=1000>; rel=\"next\""));

    // Following the Link, then `next` in the body, walks every child once, in order.
    let mut seen = first;
    let mut page = node
        .get_json(link.trim_start_matches('<').split('>').next().unwrap())
        .await;
    loop {
        seen.extend(strings(&page["children"]));
        match page["next"].as_str() {
            Some(next) => {
                page = node
                    .get_json(&format!("/api/v1/kv/big/?limit=700&after={}", encode(next)))
                    .await
            }
            None => break,
        }
    }
    assert_eq!(seen, expected);

    // A folder cursor skips the whole folder; so does a cursor below it.
    for cursor in ["big/k00100/", "big/k00100/deep/5"] {
        let page = node
            .get_json(&format!("/api/v1/kv/big/?limit=2&after={}", encode(cursor)))
            .await;
        assert_eq!(
            page,
            json!({"children": ["big/k00101", "big/k00102"], "next": "big/k00102"})
        );
    }
    // The last page says so, and a cursor past everything is an empty last page, not a 404.
    let last = node.get_json("/api/v1/kv/big/?after=big/k02499").await;
    assert_eq!(last, json!({"children": ["big/zz/"], "next": null}));
    let past = node.get_json("/api/v1/kv/big/?after=big/zzz").await;
    assert_eq!(past, json!({"children": [], "next": null}));
    // A small folder answers as it always did, without a cursor.
    let response = node.client.get(node.kv("big/k00100/deep/")).send().await.unwrap();
    assert!(response.headers().get("x-cave-next").is_none());
    assert_eq!(strings(&response.json().await.unwrap()).len(), 1_000);

    // Bad paging parameters are 400s naming the parameter.
    for bad in [
        "limit=0",
        "limit=10001",
        "limit=ten",
        "after=a//b",
        "contains=x",
        "count=true&limit=3",
    ] {
        let response = node.client.get(node.kv(&format!("big/?{bad}"))).send().await.unwrap();
        let name = bad.split(['=', '&']).next().unwrap();
        expect_error(response, 400, "invalid_input", name).await;
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn meta_count_and_contains_describe_a_folder() {
    let (_dir, node) = common::start_prod().await;
    node.put("app/greeting", "hello").await;
    node.put_secret("app/db/password", "hunter2").await;
    node.put("app/db/user", "cave").await;
    node.put("app/Ünïcode/Straße", "x").await;
    node.put("app/gone", "x").await;
    node.delete("app/gone").await;

    let page = node.get_json("/api/v1/kv/app/?meta=true").await;
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(page["next"], Value::Null);
    let keys: Vec<&str> = entries.iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["app/db/", "app/greeting", "app/Ünïcode/"]);
    assert_eq!(entries[0], json!({"key": "app/db/", "folder": true}));
    let greeting = &entries[1];
    assert_eq!(greeting["folder"], false);
    assert_eq!(greeting["size"], 5);
    assert_eq!(greeting["secret"], false);
    assert_eq!(greeting["content_type"], "application/octet-stream");
    let version = greeting["version"].as_str().unwrap().to_string();
    let stored = node.client.get(node.kv("app/greeting")).send().await.unwrap();
    assert_eq!(stored.headers()["x-cave-version"].to_str().unwrap(), version);
    // modified_ms is the version's wall clock: within a minute of now.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let modified = greeting["modified_ms"].as_u64().unwrap();
    assert!(
        modified <= now_ms && now_ms - modified < 60_000,
        "{modified} vs {now_ms}"
    );
    // Recursive listings carry modified_ms too; meta pages like the rest.
    let recurse = node.get_json("/api/v1/kv/app/?recurse=true").await;
    assert!(recurse[0]["modified_ms"].as_u64().unwrap() > 0, "{recurse}");
    let one = node.get_json("/api/v1/kv/app/?meta=true&limit=1").await;
    assert_eq!(one["entries"].as_array().unwrap().len(), 1);
    assert_eq!(one["next"], "app/db/");

    // count: live keys below, as a recursive delete would delete them; the root too.
    assert_eq!(node.get_json("/api/v1/kv/app/?count=true").await, json!({"count": 4}));
    assert_eq!(
        node.get_json("/api/v1/kv/app/db/?count=true").await,
        json!({"count": 2})
    );
    assert_eq!(node.get_json("/api/v1/kv/?count=true").await, json!({"count": 4}));
    assert_eq!(
        node.get_json("/api/v1/kv/nothing/?count=true").await,
        json!({"count": 0})
    );

    // contains: case-insensitive, on the path below the folder, unicode included.
    let found = |query: &str| {
        let node = &node;
        let query = query.to_string();
        async move {
            let page = node.get_json(&format!("/api/v1/kv/app/?recurse=true&{query}")).await;
            let keys: Vec<String> = page["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["key"].as_str().unwrap().to_string())
                .collect();
            (keys, page["next"].clone())
        }
    };
    assert_eq!(
        found("contains=DB").await,
        (vec!["app/db/password".into(), "app/db/user".into()], Value::Null)
    );
    assert_eq!(
        found(&format!("contains={}", encode("STRAßE"))).await.0,
        ["app/Ünïcode/Straße"]
    );
    assert_eq!(
        found(&format!("contains={}", encode("üNÏ"))).await.0,
        ["app/Ünïcode/Straße"]
    );
    // "app" is the folder itself, not below it: nothing matches, and that is an empty page.
    assert_eq!(found("contains=app").await, (vec![], Value::Null));
    // Paged: `next` is the last key examined.
    assert_eq!(
        found("contains=s&limit=1").await,
        (vec!["app/db/password".into()], json!("app/db/password"))
    );
    let tree = node.get_json("/api/v1/kv/app/?tree=true&contains=user").await;
    assert_eq!(tree["tree"]["db/"]["user"]["size"], 4, "{tree}");
    let response = node
        .client
        .get(node.kv("missing/?recurse=true&contains=x"))
        .send()
        .await
        .unwrap();
    expect_error(response, 404, "not_found", "no keys").await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn contains_examines_a_bounded_number_of_keys_per_request() {
    let (_dir, node) = common::start_prod().await;
    // 100,000 examined per request: 100,005 keys of which only the last matches.
    let keys: Vec<String> = (0..100_005)
        .map(|i| {
            if i == 100_004 {
                "hay/needle".into()
            } else {
                format!("hay/k{i:06}")
            }
        })
        .collect();
    fill(&node, &keys).await;
    let first = node
        .get_json("/api/v1/kv/hay/?recurse=true&contains=needle&limit=10")
        .await;
    assert_eq!(first["entries"], json!([]));
    let next = first["next"].as_str().unwrap().to_string();
    assert_eq!(next, "hay/k099999");
    let second = node
        .get_json(&format!(
            "/api/v1/kv/hay/?recurse=true&contains=needle&limit=10&after={next}"
        ))
        .await;
    let keys: Vec<&str> = second["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["hay/needle"]);
    assert_eq!(second["next"], Value::Null);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_sees_only_what_it_may_list_and_next_still_walks_everything() {
    let (_dir, node) = common::start_prod().await;
    for key in ["shop/a", "shop/b/1", "shop/c", "shop/d/1", "shop/e"] {
        node.put(key, "v").await;
    }
    let policy = json!({"rules": [{"prefix": "shop/b/", "allow": ["list"]}, {"prefix": "shop/e", "allow": ["list"]}]});
    let response = node
        .client
        .put(node.url("/api/v1/acl/policies/part"))
        .json(&policy)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let made: Value = node
        .client
        .post(node.url("/api/v1/acl/tokens"))
        .json(&json!({"policies": ["part"], "description": "part"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client = client_with_token(made["token"].as_str().unwrap());
    let get = |path: String| {
        let client = client.clone();
        let url = node.url(&path);
        async move {
            let response = client.get(url).send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            response.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(get("/api/v1/kv/shop/".into()).await, json!(["shop/b/", "shop/e"]));
    // Pages of two: the filtered page may be short (or empty), and `next` goes on regardless.
    let mut seen = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let page = get(format!("/api/v1/kv/shop/?limit=2{after}")).await;
        pages += 1;
        seen.extend(strings(&page["children"]));
        match page["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => break,
        }
    }
    assert_eq!((seen, pages), (vec!["shop/b/".to_string(), "shop/e".to_string()], 3));
    assert_eq!(get("/api/v1/kv/shop/?count=true".into()).await, json!({"count": 2}));
    node.stop().await;
}
