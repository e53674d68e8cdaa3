//! Product intelligence on the real stack: settings, a Slack thread becoming quoted items tied
//! to the HubSpot contact, company and open deals, themes that near-duplicates join,
//! oversized messages skipped with the reason, redelivery and re-runs adding nothing, feedback
//! imported as CSV with bad rows refused by number, each user seeing only their own, the
//! product demo, the chat tools, rules on insight events, tier 2 with a (fake) model that
//! invents quotes and breaks its JSON, and the evaluation harness on a slice of its data.

use crate::rules::get_json as get;
use assistant_tests::TestApp;
use common::events::{DocUpserted, Envelope, Event};
use common::ids::Source;
use common::{DocumentId, UserId};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

/// Model calls recorded in the user's usage, all days together, and the usage itself.
async fn model_calls(app: &TestApp, token: &str) -> (i64, Value) {
    let usage = get(app, token, "/api/usage").await;
    let calls = usage["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["calls"].as_i64().unwrap())
        .sum();
    (calls, usage)
}

async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> reqwest::Response {
    app.http
        .post(format!("{}{path}", app.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn enable(app: &TestApp, token: &str, settings: Value) {
    let r = app
        .http
        .put(format!("{}/api/insights/settings", app.url))
        .bearer_auth(token)
        .json(&settings)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// Settings the API refuses (422): the field it names.
async fn settings_refused(app: &TestApp, token: &str, settings: Value) -> String {
    let r = app
        .http
        .put(format!("{}/api/insights/settings", app.url))
        .bearer_auth(token)
        .json(&settings)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    r.json::<Value>().await.unwrap()["field"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits until the pipeline recorded an outcome for this version of the document.
async fn wait_read(app: &TestApp, user: UserId, id: DocumentId) -> Value {
    assistant_tests::eventually("insights outcome", Duration::from_secs(60), || async {
        outcome(app, user, id).await.is_some()
    })
    .await;
    outcome(app, user, id).await.unwrap()
}

/// The recorded outcome for the document's current version.
async fn outcome(app: &TestApp, user: UserId, id: DocumentId) -> Option<Value> {
    use sea_orm::{ConnectionTrait, Statement};
    let row = app
        .db
        .query_one_raw(Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT m.status, m.reason, m.items FROM insight_messages m
             JOIN documents d ON d.id = m.document_id AND d.content_hash = m.content_hash
             WHERE m.user_id = $1 AND m.document_id = $2",
            [user.0.into(), id.0.into()],
        ))
        .await
        .unwrap()?;
    Some(json!({
        "status": r_str(&row, "status"),
        "reason": row.try_get::<Option<String>>("", "reason").unwrap(),
        "items": row.try_get::<i32>("", "items").unwrap(),
    }))
}

fn r_str(row: &sea_orm::QueryResult, col: &str) -> String {
    row.try_get::<String>("", col).unwrap()
}

fn slack(external_id: &str, user_name: &str, body: &str) -> Value {
    json!({
        "source": "slack", "kind": "message", "external_id": external_id,
        "title": "#customer-feedback", "body": body,
        "metadata": {"channel": "C0FEED", "channel_name": "customer-feedback",
                     "user": "U0DANA", "user_name": user_name},
        "occurred_at": "2026-12-01T10:00:00Z",
    })
}

async fn crm(app: &TestApp, user: UserId, token: &str) {
    let r = post(app, token, "/api/ingest/documents", json!({"documents": [
        {"source": "hubspot", "kind": "contact", "external_id": "contact:101", "title": "Dana Reyes",
         "body": "Email: dana@acme.example",
         "metadata": {"id": "101", "properties": {"email": "dana@acme.example", "firstname": "Dana",
                      "lastname": "Reyes", "company": "Acme"},
                      "associations": {"companies": ["501"], "deals": ["901", "902"]}}},
        {"source": "hubspot", "kind": "company", "external_id": "company:501", "title": "Acme Corp",
         "body": "Domain: acme.example", "metadata": {"id": "501", "properties": {"name": "Acme Corp"}}},
        {"source": "hubspot", "kind": "deal", "external_id": "deal:901", "title": "Acme renewal",
         "body": "Amount: 48000", "metadata": {"id": "901", "properties": {"amount": "48000", "dealstage": "contractsent"}}},
        {"source": "hubspot", "kind": "deal", "external_id": "deal:902", "title": "Acme pilot",
         "body": "Amount: 5000", "metadata": {"id": "902", "properties": {"amount": "5000", "dealstage": "closedwon"}}},
    ]}))
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    crate::wait_indexed(
        app,
        &[
            crate::doc_id(user, "hubspot", "contact:101"),
            crate::doc_id(user, "hubspot", "deal:902"),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_slack_thread_becomes_quoted_items_tied_to_the_contact_company_and_open_deals() {
    let app = TestApp::spawn_only(&["ingest", "embedding"]).await;
    let (user, token) = app.user("pm@example.com").await;
    crm(&app, user, &token).await;

    // Settings: off until turned on; a bad field is named.
    let s = get(&app, &token, "/api/insights/settings").await;
    assert_eq!(s["enabled"], false);
    assert_eq!(
        settings_refused(&app, &token, json!({"enabled": true, "min_score": 11})).await,
        "min_score"
    );
    assert_eq!(
        settings_refused(
            &app,
            &token,
            json!({"enabled": true, "product_areas": ["Reporting", " : export"]})
        )
        .await,
        "product_areas[1]"
    );
    enable(
        &app,
        &token,
        json!({"enabled": true, "sources": ["slack"], "channels": ["#customer-feedback"],
               "product_areas": ["Reporting: export, excel", "Calendar: sync, meeting"]}),
    )
    .await;

    let body = "Hey folks, hope the launch went well!\nOne thing from our side: could you add a bulk export of invoices to Excel?\nAlso the calendar sync has been failing since Tuesday and meetings are missing.\nSee you at the conference next week.";
    let r = post(
        &app,
        &token,
        "/api/ingest/documents",
        json!({"documents": [slack("C0FEED:1733000000.000100", "Dana Reyes", body)]}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = crate::doc_id(user, "slack", "C0FEED:1733000000.000100");
    let outcome = wait_read(&app, user, id).await;
    assert_eq!(outcome["status"], "extracted");

    let items = get(&app, &token, &format!("/api/insights/items?document={id}")).await;
    let items = items["items"].as_array().unwrap().clone();
    let mut got: Vec<(String, String)> = items
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().unwrap().to_owned(),
                i["quote"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                "bug".to_owned(),
                "Also the calendar sync has been failing since Tuesday and meetings are missing."
                    .to_owned()
            ),
            (
                "feature_request".to_owned(),
                "One thing from our side: could you add a bulk export of invoices to Excel?"
                    .to_owned()
            ),
        ]
    );
    for item in &items {
        // The quote is the source's own text at the span.
        let (a, b) = (
            item["span_start"].as_u64().unwrap() as usize,
            item["span_end"].as_u64().unwrap() as usize,
        );
        assert_eq!(&body[a..b], item["quote"]);
        assert_eq!(item["external_id"], "C0FEED:1733000000.000100");
        assert_eq!(item["customer"]["contact_id"], "101");
        assert_eq!(item["customer"]["email"], "dana@acme.example");
        assert_eq!(item["company"], "Acme Corp");
        // The closed-won pilot is not open; the renewal is.
        assert_eq!(item["customer"]["open_deals"], 1);
        assert_eq!(item["customer"]["open_deal_amount"], 48000.0);
    }
    let areas: Vec<(&str, &str)> = items
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().unwrap(),
                i["product_area"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        areas.contains(&("feature_request", "Reporting")),
        "{areas:?}"
    );
    assert!(areas.contains(&("bug", "Calendar")), "{areas:?}");
    let themes = get(&app, &token, "/api/insights/themes").await;
    assert_eq!(themes["themes"].as_array().unwrap().len(), 2);
    // By product area, and by the open deals of the accounts that asked.
    let reporting = get(&app, &token, "/api/insights/themes?product_area=reporting").await;
    let reporting = reporting["themes"].as_array().unwrap();
    assert_eq!(reporting.len(), 1, "{reporting:?}");
    assert_eq!(reporting[0]["kind"], "feature_request");
    let by_revenue = get(&app, &token, "/api/insights/themes?sort=revenue").await;
    for t in by_revenue["themes"].as_array().unwrap() {
        assert_eq!(t["open_deal_amount"], 48000.0, "{t}");
    }
    let r = app
        .http
        .get(format!("{}/api/insights/themes?sort=loudest", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json::<Value>().await.unwrap()["field"], "sort");
    let calendar = get(&app, &token, "/api/insights/items?product_area=Calendar").await;
    assert_eq!(calendar["items"].as_array().unwrap().len(), 1);

    // A message from a channel outside the settings is not read.
    let mut other = slack(
        "C0RANDOM:1733000000.000200",
        "Dana Reyes",
        "Could you add a bulk export of invoices to Excel please?",
    );
    other["metadata"]["channel"] = json!("C0RANDOM");
    other["metadata"]["channel_name"] = json!("random");
    let r = post(
        &app,
        &token,
        "/api/ingest/documents",
        json!({"documents": [other]}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let skipped_channel = crate::doc_id(user, "slack", "C0RANDOM:1733000000.000200");
    crate::wait_indexed(&app, &[skipped_channel]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let none = get(
        &app,
        &token,
        &format!("/api/insights/items?document={skipped_channel}"),
    )
    .await;
    assert_eq!(none["items"], json!([]));
}

#[tokio::test]
async fn near_duplicates_join_a_theme_and_redelivery_or_a_rerun_adds_nothing() {
    let app = TestApp::spawn_only(&["ingest", "embedding"]).await;
    let (user, token) = app.user("pm@example.com").await;
    enable(&app, &token, json!({"enabled": true})).await;
    let first = "It would be really useful to export our invoices to Excel in bulk.";
    let second = "Could you add a bulk export of invoices to Excel?";
    let third = "The mobile app logs me out every few minutes.";
    for (i, text) in [first, second, third].iter().enumerate() {
        let r = post(
            &app,
            &token,
            "/api/ingest/documents",
            json!({"documents": [slack(&format!("C0FEED:{i}"), "Sam Lee", text)]}),
        )
        .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        wait_read(
            &app,
            user,
            crate::doc_id(user, "slack", &format!("C0FEED:{i}")),
        )
        .await;
    }
    let themes = get(&app, &token, "/api/insights/themes").await;
    let themes = themes["themes"].as_array().unwrap().clone();
    let export = themes
        .iter()
        .find(|t| t["kind"] == "feature_request")
        .expect("a feature-request theme");
    assert_eq!(export["items"], 2, "{themes:?}");
    assert_eq!(export["accounts"], 1);
    let detail = get(
        &app,
        &token,
        &format!("/api/insights/themes/{}", export["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(detail["items"].as_array().unwrap().len(), 2);
    assert!(themes.iter().any(|t| t["kind"] == "bug" && t["items"] == 1));
    let before = get(&app, &token, "/api/insights/items").await;

    // The same doc.upserted again (a redelivery after the dedup window), and once forced
    // (`again`, as a reindex or replay sends it): nothing is added, ids stay the same.
    let id = crate::doc_id(user, "slack", "C0FEED:0");
    let doc = db::documents::get(&app.db, id).await.unwrap().unwrap();
    let first_read = read_at(&app, id).await;
    for (again, caused_by) in [(false, "TEST:1"), (true, "TEST:2")] {
        app.bus
            .publish(&Envelope::new(
                user,
                Event::DocUpserted(DocUpserted {
                    document_id: id,
                    source: Source::parse("slack").unwrap(),
                    kind: Source::parse("message").unwrap(),
                    content_hash: doc.content_hash.clone(),
                    created: false,
                    caused_by: caused_by.into(),
                    again,
                    insights_only: again,
                }),
            ))
            .await
            .unwrap();
    }
    let (items, themes_count) = count(&app, user).await;
    assistant_tests::eventually("the forced re-run", Duration::from_secs(30), || async {
        read_at(&app, id).await > first_read
    })
    .await;
    assert_eq!(count(&app, user).await, (items, themes_count));
    let after = get(&app, &token, "/api/insights/items").await;
    let ids = |v: &Value| {
        let mut ids: Vec<String> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| format!("{}:{}", i["id"], i["theme_id"]))
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&before), ids(&after));
}

async fn read_at(app: &TestApp, id: DocumentId) -> chrono::DateTime<chrono::Utc> {
    use sea_orm::{ConnectionTrait, Statement};
    app.db
        .query_one_raw(Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT updated_at FROM insight_messages WHERE document_id = $1",
            [id.0.into()],
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "updated_at")
        .unwrap()
}

async fn count(app: &TestApp, user: UserId) -> (i64, i64) {
    use sea_orm::{ConnectionTrait, Statement};
    let r = app
        .db
        .query_one_raw(Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT (SELECT count(*) FROM insight_items WHERE user_id = $1) AS items,
                    (SELECT count(*) FROM insight_themes WHERE user_id = $1) AS themes",
            [user.0.into()],
        ))
        .await
        .unwrap()
        .unwrap();
    (
        r.try_get("", "items").unwrap(),
        r.try_get("", "themes").unwrap(),
    )
}

#[tokio::test]
async fn oversized_messages_are_skipped_with_the_reason_and_users_see_only_their_own() {
    let app = TestApp::spawn_only(&["ingest", "embedding"]).await;
    let (user, token) = app.user("pm@example.com").await;
    let (advisor, advisor_token) = app.user("advisor@example.com").await;
    enable(&app, &token, json!({"enabled": true, "sources": ["slack"]})).await;
    let huge = "The export to Excel times out on large accounts. ".repeat(1_100); // ~55 KB
    let request = "Could you add a bulk export of invoices to Excel?";
    for (t, id, text) in [
        (&token, "C0FEED:big", huge.as_str()),
        (&token, "C0FEED:ask", request),
        // The advisor never turned it on: their messages are not read at all.
        (&advisor_token, "C0FEED:ask", request),
    ] {
        let r = post(
            &app,
            t,
            "/api/ingest/documents",
            json!({"documents": [slack(id, "Sam Lee", text)]}),
        )
        .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    let big = wait_read(&app, user, crate::doc_id(user, "slack", "C0FEED:big")).await;
    assert_eq!(big["status"], "skipped");
    assert!(
        big["reason"].as_str().unwrap().starts_with("too_large"),
        "{big}"
    );
    wait_read(&app, user, crate::doc_id(user, "slack", "C0FEED:ask")).await;
    let progress = get(&app, &token, "/api/insights/progress").await;
    assert!(
        progress["progress"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["status"] == "skipped" && p["messages"] == 1),
        "{progress}"
    );

    let advisor_doc = crate::doc_id(advisor, "slack", "C0FEED:ask");
    crate::wait_indexed(&app, &[advisor_doc]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&app, advisor).await, (0, 0));
    let theirs = get(&app, &advisor_token, "/api/insights/themes").await;
    assert_eq!(theirs["themes"], json!([]));
    let theirs = get(&app, &advisor_token, "/api/insights/items").await;
    assert_eq!(theirs["items"], json!([]));
    let mine = get(&app, &token, "/api/insights/items").await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
    // Another user's theme is not found by id either.
    let theme = mine["items"][0]["theme_id"].as_str().unwrap().to_owned();
    let r = app
        .http
        .get(format!("{}/api/insights/themes/{theme}", app.url))
        .bearer_auth(&advisor_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn imported_feedback_refuses_bad_rows_by_number_and_keeps_the_good_ones() {
    let app = TestApp::spawn_only(&["ingest", "embedding"]).await;
    // Never turned on: imported feedback is read anyway.
    let (user, token) = app.user("pm@example.com").await;
    let csv = "external_id,text,customer_email,company\n\
               t-1,\"Please add an audit log export, our compliance team asks for it every quarter.\",ops@globex.example,Globex\n\
               t-2,,someone@globex.example,Globex\n\
               t-3,The invoice PDF shows the wrong currency for our UK entity.,not-an-address,Globex\n\
               t-4,The invoice PDF shows the wrong currency for our UK entity.,finance@initech.example,Initech\n";
    let r = app
        .http
        .post(format!("{}/api/insights/feedback", app.url))
        .bearer_auth(&token)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["accepted"].as_array().unwrap().len(), 2);
    let refused: Vec<(u64, String)> = answer["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["row"].as_u64().unwrap(),
                r["field"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        refused,
        vec![(2, "text".to_owned()), (3, "customer_email".to_owned())]
    );
    for id in ["t-1", "t-4"] {
        let outcome = wait_read(&app, user, crate::doc_id(user, "feedback", id)).await;
        assert_eq!(outcome["status"], "extracted", "{id}: {outcome}");
    }
    let items = get(&app, &token, "/api/insights/items?source=feedback").await;
    let companies: Vec<&str> = items["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["company"].as_str().unwrap())
        .collect();
    assert!(
        companies.contains(&"Globex") && companies.contains(&"Initech"),
        "{items}"
    );
    let r = post(
        &app,
        &token,
        "/api/insights/feedback",
        json!({"rows": [{"text": ""}]}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.json::<Value>().await.unwrap()["field"],
        "rows[1].external_id"
    );
}

/// Loads the product demo for `user` and waits until the pipeline read its messages.
async fn load_product_demo(app: &TestApp, user: UserId) {
    let limits = common::intake::Limits {
        max_batch: 100,
        max_body_bytes: 256 * 1024,
    };
    let accepted = ctl::load_product_demo(&app.db, &app.bus, user, &limits)
        .await
        .unwrap();
    for a in accepted
        .iter()
        .filter(|a| !a.external_id.contains(':') || a.external_id.starts_with("C0"))
    {
        wait_read(app, user, a.id).await;
    }
}

/// `make run`'s product team demo: with no key, its feedback forms themes a product manager
/// would recognise, quoted and tied to the accounts, and small talk stays out.
#[tokio::test]
async fn the_product_demo_forms_themes_across_accounts_with_no_model() {
    let app = TestApp::spawn_only(&["ingest", "embedding"]).await;
    let (user, token) = app.user("demo@product.example").await;
    load_product_demo(&app, user).await;
    let themes = get(&app, &token, "/api/insights/themes?sort=accounts").await;
    let themes = themes["themes"].as_array().unwrap().clone();
    let summary: Vec<String> = themes
        .iter()
        .map(|t| {
            format!(
                "{} [{}] items {} accounts {}",
                t["title"], t["kind"], t["items"], t["accounts"]
            )
        })
        .collect();
    eprintln!("{}", summary.join("\n"));
    // CRM records hold no one's words: read for customers, never for feedback.
    let progress = get(&app, &token, "/api/insights/progress").await;
    assert!(
        progress["progress"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["source"] != "hubspot"),
        "{progress}"
    );
    let items = get(&app, &token, "/api/insights/items?limit=500").await;
    let items = items["items"].as_array().unwrap().clone();
    assert!(
        items
            .iter()
            .all(|i| !i["quote"].as_str().unwrap().contains("Lunch")
                && !i["quote"].as_str().unwrap().contains("check-in")),
        "small talk became an item"
    );
    // Invoice export: asked in Slack, an email and a call, by Acme, Initech and Hooli.
    let export: Vec<&Value> = items
        .iter()
        .filter(|i| {
            i["quote"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("export")
        })
        .collect();
    assert!(export.len() >= 5, "{export:?}");
    let export_theme = &export[0]["theme_id"];
    let joined = export
        .iter()
        .filter(|i| &i["theme_id"] == export_theme)
        .count();
    assert!(
        joined * 10 >= export.len() * 6,
        "the export requests are scattered: {summary:?}"
    );
    let theme = themes.iter().find(|t| &t["id"] == export_theme).unwrap();
    assert!(theme["accounts"].as_i64().unwrap() >= 3, "{theme}");
    // The call's quote is the customer's, resolved through the participant's address.
    let from_call = items
        .iter()
        .find(|i| i["external_id"] == "call-globex-renewal")
        .expect("an item from the Globex call");
    assert_eq!(from_call["company"], "Globex");
    assert_eq!(from_call["customer"]["open_deal_amount"], 120000.0);
}

/// "What are customers asking for most this month, and who?": the assistant reads the top
/// themes and answers citing a customer's own words, like any other source.
#[tokio::test]
async fn the_assistant_answers_what_customers_ask_for_with_cited_quotes() {
    use assistant_tests::fake_model::{FakeModel, Reply, last_message, tool_results};
    let fake = FakeModel::responding(|request: &Value| {
        // Tier 2 of the insights pipeline shares the model: each imported row is one item.
        if let Some(item) = assistant_tests::fake_model::tier2_reply(request) {
            return item;
        }
        if last_message(request)["role"] == "tool" {
            let results = tool_results(request);
            let theme = &results[0]["themes"][0];
            let quote = &theme["quotes"][0];
            return Reply::text(
                &format!(
                    "Most asked: {} ({} mentions, {} accounts), e.g. {} at {} [{}].",
                    theme["theme"],
                    theme["mentions"],
                    theme["accounts"],
                    quote["customer"],
                    quote["company"],
                    quote["source"]
                ),
                9,
            );
        }
        Reply::tool(
            "top_themes",
            json!({"from": "2026-11-01T00:00:00Z", "sort": "accounts"}),
        )
    })
    .await;
    let app = crate::chat::chat_app(Some(&fake)).await;
    let (user, token) = app.user("pm@chat.example").await;
    let rows = json!({"rows": [
        {"external_id": "s-1", "text": "Please add a bulk export of invoices to Excel.",
         "customer_email": "ana@globex.example", "customer_name": "Ana Ruiz", "company": "Globex",
         "occurred_at": "2026-11-20T10:00:00Z"},
        {"external_id": "s-2", "text": "Could you add a bulk export of all our invoices to Excel?",
         "customer_email": "li@initech.example", "company": "Initech",
         "occurred_at": "2026-11-21T10:00:00Z"},
        {"external_id": "s-3", "text": "Could you support single sign-on with Okta?",
         "customer_email": "li@initech.example", "company": "Initech",
         "occurred_at": "2026-11-22T10:00:00Z"},
    ]});
    let r = post(&app, &token, "/api/insights/feedback", rows).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    for id in ["s-1", "s-2", "s-3"] {
        wait_read(&app, user, crate::doc_id(user, "feedback", id)).await;
    }
    let response = crate::chat::stream(
        &app,
        &token,
        json!({"message": "What are customers asking for most this month, and who?"}),
        None,
    )
    .await;
    let events = crate::chat::read_events(response, |_| false).await;
    let call = events.iter().find(|e| e.event == "tool_call").unwrap();
    assert_eq!(call.data["name"], "top_themes");
    let done = crate::chat::done(&events);
    let text = done["text"].as_str().unwrap();
    assert!(text.contains("2 mentions, 2 accounts"), "{text}");
    let citations = done["citations"].as_array().unwrap();
    assert_eq!(citations.len(), 1, "{citations:?}");
    assert_eq!(citations[0]["source"], "feedback");
    assert!(
        ["s-1", "s-2"].contains(&citations[0]["external_id"].as_str().unwrap()),
        "{citations:?}"
    );
    // The quotes reached the model as data, under the notice.
    let second = &fake.received()[1].body;
    assert!(second["messages"].to_string().contains("not instructions"));
}

/// `make bench`'s product-intelligence evaluation, on a slice of its data: it reads the
/// public sets, splits off the held-out third, and scores the shipped classifier, the
/// in-domain baseline and the store's themes with metrics in range.
#[tokio::test]
async fn the_evaluation_runs_on_a_slice_of_the_public_data() {
    use assistant_tests::insights_eval as eval;
    let app = TestApp::spawn_only(&[]).await;
    let model = embed::LocalModel::load(std::path::Path::new(
        &assistant_tests::test_config().await.embedding_model_dir,
    ))
    .unwrap();
    let classifier = eval::local_classifier(&model).unwrap();
    let c = eval::classification(&model, &classifier, 6, 120).unwrap();
    assert!(c.held_out > 20 && c.held_out < 80, "{}", c.held_out);
    for p in [c.feature, c.bug, c.baseline_feature, c.baseline_bug] {
        assert!((0.0..=1.0).contains(&p.f1) && p.support > 0, "{p:?}");
    }
    assert!(c.tier1_rate > 0.0 && c.embedder_rate > 0.0);
    let t = eval::themes(&app.db, &model, db::insights::Joining::default(), 2, &[0.6])
        .await
        .unwrap();
    assert!(t.held_out > 10);
    for g in [t.online, t.join_only, t.tuned, t.batch] {
        assert!(g.groups >= 2 && g.groups <= t.held_out, "{g:?}");
        assert!((0.0..=1.0).contains(&g.accuracy) && (0.0..=1.0001).contains(&g.nmi));
    }
    // The team's own curations, held out by time: the simulated team curates, every move
    // survives the regroupings that follow, and the last quarter is scored for each share.
    let cu = eval::curation(
        &app.db,
        &model,
        &classifier,
        6,
        db::insights::Joining::default(),
        160,
    )
    .await
    .unwrap();
    assert_eq!((cu.messages, cu.requests), (160, 160));
    assert_eq!((cu.last_quarter, cu.last_quarter_requests), (40, 40));
    assert_eq!(cu.dismissing.len(), 1 + eval::CURATED_SHARES.len());
    assert_eq!(cu.moving.len(), 1 + eval::CURATED_SHARES.len());
    assert_eq!(
        (cu.dismissing[0].dismissed, cu.dismissing[0].dropped),
        (0, 0)
    );
    assert_eq!((cu.moving[0].merges, cu.moving[0].moves), (0, 0));
    // More of the stream curated, more curations.
    let last = cu.dismissing.last().unwrap();
    assert!(
        last.dismissed > cu.dismissing[1].dismissed,
        "{:?}",
        cu.dismissing
    );
    let last = cu.moving.last().unwrap();
    assert!(
        last.merges + last.moves > cu.moving[1].merges + cu.moving[1].moves,
        "{:?}",
        cu.moving
    );
    for m in &cu.moving {
        assert_eq!(m.intact, m.moves, "{m:?}");
        let g = m.last_quarter;
        assert!(g.groups >= 2 && (0.0..=1.0).contains(&g.accuracy), "{g:?}");
    }
    // The what-if of other bars, at the shipped bar, drops what the store dropped.
    let (bar, at) = &cu.bars[0];
    assert_eq!(*bar, db::insights::DISMISSED_LIKE);
    let most = cu.dismissing.last().unwrap();
    assert_eq!(
        (at.dropped, at.kept.precision),
        (most.dropped, most.kept.precision)
    );
    // A lower bar drops at least as much.
    assert!(
        cu.bars.windows(2).all(|w| w[1].1.dropped >= w[0].1.dropped),
        "{:?}",
        cu.bars
    );
    for d in &cu.dismissing {
        assert!(d.dropped_feedback <= d.dropped && (0.0..=1.0).contains(&d.kept.f1));
    }
    // The evaluation's users are gone afterwards.
    use sea_orm::{ConnectionTrait, Statement};
    let left = app
        .db
        .query_one_raw(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT count(*) AS n FROM users WHERE email LIKE 'insights-eval-%' OR email LIKE 'curation-eval-%'".to_owned(),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert_eq!(left, 0);
}

/// Rules act on what the pipeline finds: a bug from a given customer notifies the team.
#[tokio::test]
async fn a_rule_acts_on_an_extracted_bug_from_a_named_company() {
    let app = TestApp::spawn().await;
    let (user, token) = app.user("pm@example.com").await;
    crm(&app, user, &token).await;
    enable(&app, &token, json!({"enabled": true, "sources": ["slack"]})).await;
    crate::rules::rule(
        &app,
        &token,
        "when insight.item.extracted if kind == \"bug\" and company == \"Acme Corp\" then notify text=\"Acme bug: {{event.title}}\"",
        false,
    )
    .await;
    let body = "Could you add a bulk export of invoices to Excel?\nAlso the calendar sync has been failing since Tuesday and meetings are missing.";
    let r = post(
        &app,
        &token,
        "/api/ingest/documents",
        json!({"documents": [slack("C0FEED:77", "Dana Reyes", body)]}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    wait_read(&app, user, crate::doc_id(user, "slack", "C0FEED:77")).await;
    assistant_tests::eventually("the notification", Duration::from_secs(30), || async {
        let seen = get(&app, &token, "/api/notifications").await;
        !seen["notifications"].as_array().unwrap().is_empty()
    })
    .await;
    // Whatever else would fire has had its time.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = get(&app, &token, "/api/notifications").await;
    let texts: Vec<String> = seen["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    // One notification, for the bug only (the request does not match the rule).
    assert_eq!(texts.len(), 1, "{seen}");
    assert!(
        texts[0].starts_with("Acme bug: The calendar sync"),
        "{seen}"
    );
}

/// With a model, tier 2 asks it: an item whose quote is in the message is stored with the
/// message's own words at the span, an invented quote never is, and an answer that stays
/// broken after one repair stores nothing and is recorded with the reason. Every call lands
/// in the user's usage.
#[tokio::test]
async fn with_a_model_invented_quotes_and_broken_json_are_never_stored() {
    use assistant_tests::fake_model::{FakeModel, Reply};
    let fake = FakeModel::responding(|request: &Value| {
        let asked = request["messages"].to_string();
        if asked.contains("calendar sync") {
            return Reply::text("Here are the items: [{\"kind\": \"bug\"", 20);
        }
        Reply::text(
            &json!({"items": [
                {"kind": "feature_request", "title": "Bulk invoice export to Excel",
                 "description": "Export all invoices to Excel at once.",
                 // Reflowed and recased by the model: found in the message all the same.
                 "quote": "could you add a bulk  export of invoices to excel?",
                 "customer": "Dana", "product_area": "billing",
                 "sentiment": "neutral", "urgency": "medium"},
                {"kind": "pain_point", "title": "Threatens to cancel",
                 "quote": "We will cancel our contract unless you add dark mode.",
                 "sentiment": "negative", "urgency": "high"}
            ]})
            .to_string(),
            40,
        )
    })
    .await;
    let app = crate::chat::chat_app(Some(&fake)).await;
    let (user, token) = app.user("pm@model.example").await;
    crm(&app, user, &token).await;
    enable(&app, &token, json!({"enabled": true})).await;
    let request = "Hi! One thing from our side: could you add a bulk export of invoices to Excel? Finance asks monthly.";
    let broken = "Also the calendar sync has been failing since Tuesday and meetings are missing.";
    for (id, text) in [("C0FEED:m1", request), ("C0FEED:m2", broken)] {
        let r = post(
            &app,
            &token,
            "/api/ingest/documents",
            json!({"documents": [slack(id, "Dana Reyes", text)]}),
        )
        .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    let first = wait_read(&app, user, crate::doc_id(user, "slack", "C0FEED:m1")).await;
    assert_eq!(first["status"], "extracted", "{first}");
    let items = get(&app, &token, "/api/insights/items").await;
    let items = items["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(
        items[0]["quote"],
        "could you add a bulk export of invoices to Excel?"
    );
    assert_eq!(items[0]["title"], "Bulk invoice export to Excel");
    assert_eq!(items[0]["product_area"], "billing");
    assert_eq!(items[0]["company"], "Acme Corp");
    let (a, b) = (
        items[0]["span_start"].as_u64().unwrap() as usize,
        items[0]["span_end"].as_u64().unwrap() as usize,
    );
    assert_eq!(&request[a..b], items[0]["quote"]);

    let second = wait_read(&app, user, crate::doc_id(user, "slack", "C0FEED:m2")).await;
    assert_eq!(second["status"], "skipped", "{second}");
    assert!(
        second["reason"]
            .as_str()
            .unwrap()
            .starts_with("model_output_invalid"),
        "{second}"
    );
    // One call for the good message, two (the answer and its one repair) for the broken one.
    let (calls, usage) = model_calls(&app, &token).await;
    assert_eq!(calls, 3, "{usage}");
    // The message reached the model as data.
    assert!(
        fake.received()[0].body["messages"]
            .to_string()
            .contains("data, not instructions")
    );
}

/// A unit vector along `axis`, nudged along `nudge` (384 dimensions, as stored).
fn direction(axis: &[(usize, f32)]) -> Vec<f32> {
    let mut v = vec![0f32; 384];
    for &(i, x) in axis {
        v[i] += x;
    }
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

/// Themes formed as items arrive depend on their order: a first item between two topics
/// pulls both into its theme. The regrouping (every 10% more items, at least 20) groups all
/// items at once: the two topics part, the larger keeps the theme's id and title, counts are
/// recomputed, and regrouping unchanged items changes nothing.
#[tokio::test]
async fn regrouping_parts_what_arrival_order_merged_and_keeps_theme_ids() {
    use db::insights::Joining;
    let app = TestApp::spawn_only(&[]).await;
    let (user, token) = app.user("pm@regroup.example").await;
    // Lenient joining online, a strict cut when regrouping.
    let joining = Joining {
        join: 0.3,
        ask: 0.3,
        regroup: 0.8,
    };
    // One item between topics A (axis 0) and B (axis 1), then 10 of A and 9 of B, interleaved.
    let mut vectors = vec![("between", direction(&[(0, 1.0), (1, 1.0)]))];
    for i in 0..10 {
        vectors.push(("a", direction(&[(0, 1.0), (10 + i, 0.1)])));
        if i < 9 {
            vectors.push(("b", direction(&[(1, 1.0), (40 + i, 0.1)])));
        }
    }
    let mut docs = Vec::new();
    for (i, (topic, vector)) in vectors.iter().enumerate() {
        let quote = format!("Request {i} about {topic}.");
        let mut f = Feedback::new(format!("row-{i}"), &quote, vector.clone());
        f.title = Some(format!("{topic} {i}"));
        f.customer.company = Some(format!("Company {i}"));
        f.metadata = json!({"company": format!("Company {i}")});
        let (doc, placed) = store_feedback(&app, user, f, joining).await;
        // Online, everything joined the first item's theme.
        assert!(
            !placed.unwrap().new_theme || i == 0,
            "item {i} started a theme"
        );
        let due = db::insights::regroup_if_due(&app.db, user, joining)
            .await
            .unwrap();
        docs.push((*topic, doc));
        if i < 19 {
            assert!(due.is_none(), "regrouped after {} items", i + 1);
            continue;
        }
        let r = due.expect("regrouped at 20 items");
        assert_eq!(
            (r.items, r.themes_before, r.themes_after),
            (20, 1, 3),
            "{r:?}"
        );
        // B's nine and the in-between item moved; A's ten stayed.
        assert_eq!(r.moved, 10, "{r:?}");
        assert_eq!(r.created.len(), 2);
        assert_eq!(r.removed, 0);
    }
    let mut themes_of: std::collections::HashMap<&str, std::collections::BTreeSet<uuid::Uuid>> =
        Default::default();
    for (topic, doc) in &docs {
        let filter = db::insights::Filter {
            document: Some(*doc),
            ..Default::default()
        };
        let items = db::insights::items(&app.db, user, &filter, 10)
            .await
            .unwrap();
        themes_of
            .entry(topic)
            .or_default()
            .insert(items[0].theme_id.unwrap());
    }
    let (a, b, between) = (&themes_of["a"], &themes_of["b"], &themes_of["between"]);
    assert_eq!((a.len(), b.len(), between.len()), (1, 1, 1));
    assert!(a != b && a != between && b != between);
    let themes = get(&app, &token, "/api/insights/themes").await;
    let themes = themes["themes"].as_array().unwrap().clone();
    let counts: Vec<(String, i64, i64)> = themes
        .iter()
        .map(|t| {
            (
                t["title"].as_str().unwrap().to_owned(),
                t["items"].as_i64().unwrap(),
                t["accounts"].as_i64().unwrap(),
            )
        })
        .collect();
    // A kept the first theme (its title is the first item's); B's theme is titled by its
    // most central item.
    assert_eq!(counts[0], ("between 0".to_owned(), 10, 10), "{counts:?}");
    assert_eq!(themes[0]["id"], a.first().unwrap().to_string());
    assert!(counts[1].0.starts_with("b "), "{counts:?}");
    assert_eq!((counts[1].1, counts[2].1), (9, 1), "{counts:?}");
    // Nothing new: nothing moves, no theme starts or ends.
    let again = db::insights::regroup(&app.db, user, joining.regroup)
        .await
        .unwrap();
    assert_eq!((again.moved, again.created.len(), again.removed), (0, 0, 0));
    assert_eq!(again.themes_after, 3);
    assert!(
        db::insights::regroup_if_due(&app.db, user, joining)
            .await
            .unwrap()
            .is_none()
    );
}

/// With a model, an item whose closest theme is similar but not clearly so is shown to the
/// model with that theme: a yes joins it, a no starts a theme, and each question is a model
/// call in the user's usage.
#[tokio::test]
async fn with_a_model_the_uncertain_band_is_decided_by_the_model() {
    use assistant_tests::fake_model::{FakeModel, Reply};
    let fake = FakeModel::responding(|request: &Value| {
        if let Some(item) = assistant_tests::fake_model::tier2_reply(request) {
            return item;
        }
        let asked = request["messages"][1]["content"].as_str().unwrap_or("");
        let feedback = asked.split("The feedback").nth(1).unwrap_or("");
        let same = feedback.to_lowercase().contains("export");
        Reply::text(&json!({ "same": same }).to_string(), 3)
    })
    .await;
    let mut config = assistant_tests::test_config().await;
    config.chat_provider = common::config::ChatProvider::Openai;
    config.chat_base_url = fake.url.clone();
    config.chat_api_key = "sk-fake-chat-key".into();
    config.chat_model = "fake-model".into();
    // Every item with a theme near it at all is in the band.
    config.insights_theme_join = 0.99;
    config.insights_theme_ask = 0.0;
    assistant_tests::mark_sensitive("sk-fake-chat-key");
    let app = TestApp::spawn_with(config, &["ingest", "embedding"]).await;
    let (user, token) = app.user("pm@band.example").await;
    let rows = [
        ("b-1", "Please add a bulk export of invoices to Excel."),
        (
            "b-2",
            "An export of every invoice as a spreadsheet would save us hours.",
        ),
        ("b-3", "Could you support single sign-on with Okta?"),
    ];
    for (id, text) in rows {
        let r = post(
            &app,
            &token,
            "/api/insights/feedback",
            json!({"rows": [{"external_id": id, "text": text, "company": "Globex"}]}),
        )
        .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        wait_read(&app, user, crate::doc_id(user, "feedback", id)).await;
    }
    let items = get(&app, &token, "/api/insights/items").await;
    let theme = |id: &str| {
        items["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["external_id"] == id)
            .unwrap_or_else(|| panic!("no item from {id}: {items}"))["theme_id"]
            .clone()
    };
    assert_eq!(theme("b-1"), theme("b-2"));
    assert_ne!(theme("b-1"), theme("b-3"));
    // Two questions (the second and third rows), three tier-2 calls.
    let asked: Vec<Value> = fake
        .received()
        .into_iter()
        .map(|r| r.body)
        .filter(|b| {
            b["messages"][0]["content"]
                .as_str()
                .unwrap_or("")
                .contains("existing theme")
        })
        .collect();
    assert_eq!(asked.len(), 2);
    assert!(
        asked[0]["messages"]
            .to_string()
            .contains("data, not instructions")
    );
    let (calls, usage) = model_calls(&app, &token).await;
    assert_eq!(calls, 5, "{usage}");
}

/// Turning product intelligence on reads what was stored before, within the settings: the
/// progress shows it waiting, then read; a channel outside the settings stays unread.
#[tokio::test]
async fn turning_it_on_reads_what_was_stored_before() {
    let app = TestApp::spawn_only(&["ingest", "embedding"]).await;
    let (user, token) = app.user("pm@backlog.example").await;
    let mut outside = slack(
        "C0RANDOM:1",
        "Sam Lee",
        "Could you add a bulk export of invoices to Excel?",
    );
    outside["metadata"]["channel"] = json!("C0RANDOM");
    outside["metadata"]["channel_name"] = json!("random");
    let r = post(
        &app,
        &token,
        "/api/ingest/documents",
        json!({"documents": [
            slack("C0FEED:1", "Sam Lee", "Could you add a bulk export of invoices to Excel?"),
            slack("C0FEED:2", "Sam Lee", "Lunch at noon, anyone?"),
            outside,
        ]}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let ids = [
        crate::doc_id(user, "slack", "C0FEED:1"),
        crate::doc_id(user, "slack", "C0FEED:2"),
        crate::doc_id(user, "slack", "C0RANDOM:1"),
    ];
    crate::wait_indexed(&app, &ids).await;
    // Off: nothing read, nothing counted as waiting.
    let progress = get(&app, &token, "/api/insights/progress").await;
    assert_eq!(progress["waiting"], json!([]), "{progress}");
    assert!(outcome(&app, user, ids[0]).await.is_none());
    // Settings saved while the pipeline is stopped are seen as waiting.
    db::insights::save_settings(
        &app.db,
        user,
        &db::insights::Settings {
            enabled: true,
            channels: vec!["#customer-feedback".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let progress = get(&app, &token, "/api/insights/progress").await;
    assert_eq!(
        progress["waiting"],
        json!([{"source": "slack", "messages": 2}]),
        "{progress}"
    );
    enable(
        &app,
        &token,
        json!({"enabled": true, "channels": ["#customer-feedback"]}),
    )
    .await;
    assert_eq!(wait_read(&app, user, ids[0]).await["status"], "extracted");
    assert_eq!(wait_read(&app, user, ids[1]).await["status"], "below");
    let progress = get(&app, &token, "/api/insights/progress").await;
    assert_eq!(progress["waiting"], json!([]), "{progress}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(outcome(&app, user, ids[2]).await.is_none());
    let items = get(&app, &token, "/api/insights/items").await;
    assert_eq!(items["items"].as_array().unwrap().len(), 1, "{items}");
}

/// With a model, messages the local classifier is unsure about are scored by the model,
/// several to a call: its score decides what reaches tier 2, every call lands in usage, and
/// the messages reach it as data.
#[tokio::test]
async fn with_a_model_tier1_scores_uncertain_messages_in_batches() {
    use assistant_tests::fake_model::{FakeModel, Reply, tier1_messages, tier1_reply};
    let fake = FakeModel::responding(|request: &Value| {
        if let Some(reply) =
            tier1_reply(request, |text| if text.contains("export") { 9 } else { 1 })
        {
            return reply;
        }
        if let Some(item) = assistant_tests::fake_model::tier2_reply(request) {
            return item;
        }
        Reply::text("{\"same\": false}", 3)
    })
    .await;
    let mut config = assistant_tests::test_config().await;
    config.chat_provider = common::config::ChatProvider::Openai;
    config.chat_base_url = fake.url.clone();
    config.chat_api_key = "sk-fake-chat-key".into();
    config.chat_model = "fake-model".into();
    // Every message is near enough the threshold to ask.
    config.insights_model_band = 10;
    assistant_tests::mark_sensitive("sk-fake-chat-key");
    let app = TestApp::spawn_with(config, &["ingest", "embedding"]).await;
    let (user, token) = app.user("pm@tier1.example").await;
    enable(&app, &token, json!({"enabled": true})).await;
    let messages = [
        (
            "C0FEED:t1",
            "Could you add a bulk export of invoices to Excel?",
        ),
        ("C0FEED:t2", "Lunch at noon, anyone?"),
        (
            "C0FEED:t3",
            "The calendar sync keeps failing since Tuesday.",
        ),
        (
            "C0FEED:t4",
            "Any chance of an export to Google Sheets as well?",
        ),
    ];
    let r = post(
        &app,
        &token,
        "/api/ingest/documents",
        json!({"documents": messages.iter().map(|(id, text)| slack(id, "Sam Lee", text)).collect::<Vec<_>>()}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mut status = Vec::new();
    for (id, _) in messages {
        let o = wait_read(&app, user, crate::doc_id(user, "slack", id)).await;
        status.push(o["status"].as_str().unwrap().to_owned());
    }
    // The model's scores decided: the bug report it scored 1 did not go on.
    assert_eq!(status, ["extracted", "below", "below", "extracted"]);
    let batches: Vec<Vec<(u64, String)>> = fake
        .received()
        .iter()
        .filter_map(|r| tier1_messages(&r.body))
        .collect();
    let scored: usize = batches.iter().map(Vec::len).sum();
    assert_eq!(scored, 4, "{batches:?}");
    assert!(
        batches.iter().any(|b| b.len() >= 2),
        "no two messages shared a call: {batches:?}"
    );
    assert!(
        fake.received()[0].body["messages"]
            .to_string()
            .contains("data, not instructions")
    );
    let (calls, usage) = model_calls(&app, &token).await;
    assert_eq!(calls as usize, fake.calls(), "{usage}");
}

/// A theme's trend: items and distinct accounts per week (Monday 00:00 UTC), weeks without
/// items included, nothing outside the window counted, and the last complete week against
/// the mean of the four before it. Someone else's theme is not found.
#[tokio::test]
async fn a_themes_trend_counts_items_and_accounts_per_week() {
    use db::insights::Joining;
    let app = TestApp::spawn_only(&[]).await;
    let (user, token) = app.user("pm@trend.example").await;
    let joining = Joining {
        join: 0.3,
        ask: 0.3,
        regroup: 0.8,
    };
    let said = [
        ("2026-10-05T10:00:00Z", "Zeta"), // before the window
        ("2026-10-13T10:00:00Z", "Acme"),
        ("2026-10-21T10:00:00Z", "Acme"),
        ("2026-10-22T10:00:00Z", "Brio"),
        ("2026-11-02T00:00:00Z", "Acme"), // the first instant of its week
        ("2026-11-08T23:59:59Z", "Cato"), // the last second of the same week
        ("2026-11-10T10:00:00Z", "Acme"),
        ("2026-11-11T10:00:00Z", "Brio"),
        ("2026-11-12T10:00:00Z", "Brio"),
        ("2026-11-17T10:00:00Z", "Dyna"),
        ("2026-11-19T10:00:00Z", "Eon"), // after `until`
    ];
    let mut theme = None;
    for (i, (at, company)) in said.iter().enumerate() {
        let quote = format!("We need exports to the warehouse ({i}).");
        let mut f = Feedback::new(
            format!("trend-{i}"),
            &quote,
            direction(&[(0, 1.0), (1 + i, 0.05)]),
        );
        f.customer.company = Some((*company).into());
        f.at = at.parse().unwrap();
        let placed = store_feedback(&app, user, f, joining)
            .await
            .1
            .unwrap()
            .theme;
        assert_eq!(*theme.get_or_insert(placed), placed);
    }
    let theme = theme.unwrap();
    let trend = get(
        &app,
        &token,
        &format!("/api/insights/themes/{theme}/trend?weeks=6&until=2026-11-18T12:00:00Z"),
    )
    .await;
    let weeks: Vec<(String, i64, i64)> = trend["weeks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["week"].as_str().unwrap().to_owned(),
                w["items"].as_i64().unwrap(),
                w["accounts"].as_i64().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("2026-10-12", 1, 1),
        ("2026-10-19", 2, 2),
        ("2026-10-26", 0, 0),
        ("2026-11-02", 2, 2),
        ("2026-11-09", 3, 2),
        ("2026-11-16", 1, 1),
    ]
    .map(|(w, i, a)| (w.to_owned(), i, a));
    assert_eq!(weeks, expected, "{trend}");
    let change = &trend["change"];
    assert_eq!(change["week"], "2026-11-09", "{trend}");
    assert_eq!(
        (change["items"].as_i64(), change["accounts"].as_i64()),
        (Some(3), Some(2))
    );
    assert_eq!(change["trailing_weeks"], 4);
    assert_eq!(change["trailing_items"], 1.25);
    assert_eq!(change["trailing_accounts"], 1.25);
    assert!(
        (change["items_change"].as_f64().unwrap() - 1.4).abs() < 1e-9,
        "{trend}"
    );

    // Without `until`, the window ends this week: the theme's items are all older.
    let now = get(&app, &token, &format!("/api/insights/themes/{theme}/trend")).await;
    assert_eq!(now["weeks"].as_array().unwrap().len(), 12);

    for (query, status) in [("weeks=2", 422), ("weeks=105", 422)] {
        let r = app
            .http
            .get(format!(
                "{}/api/insights/themes/{theme}/trend?{query}",
                app.url
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["field"], "weeks", "{body}");
    }
    let (_, other) = app.user("pm@elsewhere.example").await;
    let r = app
        .http
        .get(format!("{}/api/insights/themes/{theme}/trend", app.url))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// One feedback message with one item, stored and placed as the pipeline places it.
struct Feedback<'a> {
    external_id: String,
    /// The item's title (default `Item <external id>`).
    title: Option<String>,
    quote: &'a str,
    kind: &'a str,
    customer: db::insights::Customer,
    vector: Vec<f32>,
    at: chrono::DateTime<chrono::Utc>,
    metadata: Value,
}

impl Feedback<'_> {
    fn new(external_id: String, quote: &str, vector: Vec<f32>) -> Feedback<'_> {
        Feedback {
            external_id,
            title: None,
            quote,
            kind: "feature_request",
            customer: db::insights::Customer::default(),
            vector,
            at: chrono::Utc::now(),
            metadata: json!({}),
        }
    }
}

/// Stores the message and its item; returns the document and where the item went (none for
/// an item dismissed before).
async fn store_feedback(
    app: &TestApp,
    user: UserId,
    f: Feedback<'_>,
    joining: db::insights::Joining,
) -> (DocumentId, Option<db::insights::Placed>) {
    let input = common::events::DocumentInput {
        source: Source::parse("feedback").unwrap(),
        kind: Source::parse("feedback").unwrap(),
        external_id: f.external_id,
        title: String::new(),
        body: f.quote.to_owned(),
        metadata: f.metadata,
        occurred_at: None,
    };
    let (doc, _, _) = db::documents::upsert(&app.db, user, &input).await.unwrap();
    let placed = db::insights::replace_items(
        &app.db,
        user,
        doc,
        vec![db::insights::NewItem {
            span_start: 0,
            span_end: f.quote.len() as i32,
            kind: f.kind.into(),
            title: f
                .title
                .unwrap_or_else(|| format!("Item {}", input.external_id)),
            description: String::new(),
            quote: f.quote.to_owned(),
            score: 8,
            customer: f.customer,
            product_area: None,
            sentiment: "neutral".into(),
            urgency: "low".into(),
            embedding: f.vector,
            occurred_at: f.at,
            confirmed: None,
        }],
        joining,
    )
    .await
    .unwrap();
    (doc, placed.into_iter().next())
}

/// A curation test's item `name`: its own message, company and vector.
async fn curated_item(
    app: &TestApp,
    user: UserId,
    name: &str,
    vector: Vec<f32>,
    joining: db::insights::Joining,
) -> Option<(uuid::Uuid, uuid::Uuid)> {
    let quote = format!("Feedback {name}: please improve this.");
    let mut f = Feedback::new(name.to_owned(), &quote, vector);
    f.customer.company = Some(format!("Company {name}"));
    let (_, placed) = store_feedback(app, user, f, joining).await;
    placed.map(|p| (p.item, p.theme))
}

async fn post_json(app: &TestApp, token: &str, path: &str, body: Value) -> (u16, Value) {
    let r = app
        .http
        .post(format!("{}{path}", app.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Each item's theme, as the API lists them (dismissed items are in no list).
async fn theme_of_items(app: &TestApp, token: &str) -> std::collections::HashMap<String, String> {
    get(app, token, "/api/insights/items?limit=500").await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_owned(),
                i["theme_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Merges, splits, renames, moves and dismissals survive regrouping at any threshold and
/// re-extraction of the same messages; each is recorded with who and when, and undone in
/// reverse order (a curation that a later one built on waits for that one's undo).
#[tokio::test]
async fn curations_survive_regrouping_and_re_extraction_and_can_be_undone() {
    let app = TestApp::spawn_only(&[]).await;
    let (user, token) = app.user("pm@curate.example").await;
    let joining = db::insights::Joining {
        join: 0.5,
        ask: 0.5,
        regroup: 0.55,
    };
    // Three topics on three axes: six items of A, six of B, four of C.
    let mut items: std::collections::HashMap<String, uuid::Uuid> = Default::default();
    let mut theme_of_topic: std::collections::HashMap<char, uuid::Uuid> = Default::default();
    for (topic, axis, n) in [('a', 0, 6), ('b', 1, 6), ('c', 2, 4)] {
        for i in 0..n {
            let name = format!("{topic}{i}");
            let (item, theme) = curated_item(
                &app,
                user,
                &name,
                direction(&[(axis, 1.0), (10 + axis * 10 + i, 0.2)]),
                joining,
            )
            .await
            .unwrap();
            assert_eq!(*theme_of_topic.entry(topic).or_insert(theme), theme);
            items.insert(name, item);
        }
    }
    let (a, b, c) = (
        theme_of_topic[&'a'],
        theme_of_topic[&'b'],
        theme_of_topic[&'c'],
    );
    let id = |name: &str| items[name].to_string();

    // Refusals name the field, and another user's themes do not exist for this one.
    let (status, body) = post_json(
        &app,
        &token,
        &format!("/api/insights/themes/{a}/merge"),
        json!({"into": a}),
    )
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("into")),
        "{body}"
    );
    let (status, body) = post_json(
        &app,
        &token,
        &format!("/api/insights/themes/{a}/split"),
        json!({"items": [id("b1")]}),
    )
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("items")),
        "{body}"
    );
    let (status, body) = post_json(
        &app,
        &token,
        &format!("/api/insights/themes/{a}/rename"),
        json!({"title": "  "}),
    )
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("title")),
        "{body}"
    );
    let (_, other) = app.user("pm@other.example").await;
    let (status, _) = post_json(
        &app,
        &other,
        &format!("/api/insights/themes/{a}/rename"),
        json!({"title": "Mine"}),
    )
    .await;
    assert_eq!(status, 404);

    // The team curates.
    let (status, rename) = post_json(
        &app,
        &token,
        &format!("/api/insights/themes/{a}/rename"),
        json!({"title": "Bulk export"}),
    )
    .await;
    assert_eq!(status, 200, "{rename}");
    assert_eq!(rename["actor"], "pm@curate.example");
    let (status, merge) = post_json(
        &app,
        &token,
        &format!("/api/insights/themes/{c}/merge"),
        json!({"into": b}),
    )
    .await;
    assert_eq!(status, 200, "{merge}");
    let (status, split) = post_json(
        &app,
        &token,
        &format!("/api/insights/themes/{a}/split"),
        json!({"items": [id("a4"), id("a5")], "title": "Export to Excel"}),
    )
    .await;
    assert_eq!(status, 201, "{split}");
    let n: uuid::Uuid = split["theme"].as_str().unwrap().parse().unwrap();
    let (status, moved) = post_json(
        &app,
        &token,
        &format!("/api/insights/items/{}/move", id("b0")),
        json!({"theme": a}),
    )
    .await;
    assert_eq!(status, 200, "{moved}");
    let (status, dismissed) = post_json(
        &app,
        &token,
        &format!("/api/insights/items/{}/dismiss", id("a3")),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{dismissed}");
    let (status, _) = post_json(
        &app,
        &token,
        &format!("/api/insights/items/{}/move", id("a3")),
        json!({"theme": b}),
    )
    .await;
    assert_eq!(status, 409, "a dismissed item is not moved");

    // What the curations say must hold, now and after every regrouping.
    let check = |when: &'static str| {
        let app = &app;
        let token = token.clone();
        let id = &id;
        async move {
            let of = theme_of_items(app, &token).await;
            let theme = |name: &str| of.get(&id(name)).cloned().unwrap_or_default();
            assert!(
                !of.contains_key(&id("a3")),
                "{when}: the dismissed item is listed"
            );
            for x in ["a0", "a1", "a2", "b0"] {
                assert_eq!(theme(x), a.to_string(), "{when}: {x} in the renamed theme");
            }
            for x in ["a4", "a5"] {
                assert_eq!(
                    theme(x),
                    n.to_string(),
                    "{when}: {x} in the split-off theme"
                );
            }
            for x in ["b1", "b2", "b3", "b4", "b5", "c0", "c1", "c2", "c3"] {
                assert_eq!(theme(x), b.to_string(), "{when}: {x} in the merged theme");
            }
            let themes = get(app, &token, "/api/insights/themes?limit=100").await;
            let title = |t: uuid::Uuid| {
                themes["themes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|x| x["id"] == t.to_string())
                    .map(|x| {
                        (
                            x["title"].as_str().unwrap().to_owned(),
                            x["items"].as_i64().unwrap(),
                        )
                    })
            };
            // Titles stay; counts may grow by the two items nobody curated.
            assert!(
                matches!(title(a), Some((t, 4..=6)) if t == "Bulk export"),
                "{when}: {:?}",
                title(a)
            );
            assert!(
                matches!(title(n), Some((t, 2..=4)) if t == "Export to Excel"),
                "{when}: {:?}",
                title(n)
            );
            assert_eq!(title(c), None, "{when}: the merged-away theme is gone");
        }
    };
    check("after curating").await;
    // Two more items nobody curated, near A and near B.
    curated_item(
        &app,
        user,
        "new-a",
        direction(&[(0, 1.0), (60, 0.2)]),
        joining,
    )
    .await;
    curated_item(
        &app,
        user,
        "new-b",
        direction(&[(1, 1.0), (61, 0.2)]),
        joining,
    )
    .await;
    for threshold in [0.99, 0.55, 0.0, -1.0] {
        db::insights::regroup(&app.db, user, threshold)
            .await
            .unwrap();
        check(match threshold {
            0.99 => "regrouped at 0.99",
            0.55 => "regrouped at 0.55",
            0.0 => "regrouped at 0",
            _ => "regrouped at -1",
        })
        .await;
    }
    // The same messages extracted again: the pinned item goes back to its theme and the
    // dismissed one stays dismissed.
    for name in ["b0", "a3"] {
        let axis = if name == "b0" { 1 } else { 0 };
        let i = name[1..].parse::<usize>().unwrap();
        curated_item(
            &app,
            user,
            name,
            direction(&[(axis, 1.0), (10 + axis * 10 + i, 0.2)]),
            joining,
        )
        .await;
    }
    check("extracted again").await;

    // Recorded: who and when, newest first.
    let list = get(&app, &token, "/api/insights/curations").await;
    let actions: Vec<&str> = list["curations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["dismiss", "move", "split", "merge", "rename"]);
    assert!(
        list["curations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["actor"] == "pm@curate.example" && c["created_at"].is_string())
    );

    // Undo, newest first; the merge waits while the move (which took an item of B) stands.
    let undo = |c: &Value| {
        format!(
            "/api/insights/curations/{}/undo",
            c["id"].as_str().or(c["curation"]["id"].as_str()).unwrap()
        )
    };
    let (status, _) = post_json(&app, &token, &undo(&dismissed), json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(theme_of_items(&app, &token).await[&id("a3")], a.to_string());
    let (status, body) = post_json(&app, &token, &undo(&dismissed), json!({})).await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = post_json(&app, &token, &undo(&merge), json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains(moved["id"].as_str().unwrap()),
        "{body}"
    );
    let (status, _) = post_json(&app, &token, &undo(&moved), json!({})).await;
    assert_eq!(status, 200);
    let (status, undone) = post_json(&app, &token, &undo(&merge), json!({})).await;
    assert_eq!(status, 200, "{undone}");
    assert_eq!(undone["undone_by"], "pm@curate.example");
    let of = theme_of_items(&app, &token).await;
    for x in ["c0", "c1", "c2", "c3"] {
        assert_eq!(of[&id(x)], c.to_string(), "{x} back in C, under its old id");
    }
    assert_eq!(of[&id("b0")], b.to_string());
    let (status, _) = post_json(&app, &token, &undo(&split), json!({})).await;
    assert_eq!(status, 200);
    let (status, _) = post_json(&app, &token, &undo(&rename), json!({})).await;
    assert_eq!(status, 200);
    let of = theme_of_items(&app, &token).await;
    for x in ["a0", "a1", "a2", "a3", "a4", "a5"] {
        assert_eq!(of[&id(x)], a.to_string(), "{x} back in A");
    }
    let theme = get(&app, &token, &format!("/api/insights/themes/{a}")).await;
    assert_eq!(
        theme["theme"]["title"], "Item a0",
        "the title before the rename"
    );
    // The split-off theme ended with the split's undo, unless an item nobody curated joined
    // it while it stood (then that item keeps it).
    let r = app
        .http
        .get(format!("{}/api/insights/themes/{n}", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    if r.status() != 404 {
        let left: Value = r.json().await.unwrap();
        let titles: Vec<&str> = left["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["title"].as_str().unwrap())
            .collect();
        assert!(
            !titles.is_empty() && titles.iter().all(|t| t.starts_with("Item new-")),
            "{left}"
        );
    }
}

/// Export, as CSV and JSON: the themes' items with quotes, customers, accounts and links,
/// filtered as the lists are; a quote a spreadsheet would run as a formula is not one there.
#[tokio::test]
async fn themes_export_as_csv_and_json_filtered_as_listed() {
    use db::insights::Customer;
    let app = TestApp::spawn_only(&[]).await;
    let (user, token) = app.user("pm@export.example").await;
    let joining = db::insights::Joining {
        join: 0.5,
        ask: 0.5,
        regroup: 0.55,
    };
    let said = [
        ("Acme", 0, "Please add a bulk export of invoices."),
        (
            "Brio",
            0,
            "=HYPERLINK(\"https://evil.example\",\"export\") would help us.",
        ),
        ("Acme", 1, "The iOS app signs me out every day."),
    ];
    for (i, (company, axis, quote)) in said.iter().enumerate() {
        let mut f = Feedback::new(
            format!("export-{i}"),
            quote,
            direction(&[(*axis, 1.0), (5 + i, 0.1)]),
        );
        f.kind = if *axis == 0 { "feature_request" } else { "bug" };
        f.customer = Customer {
            company: Some((*company).into()),
            name: Some(format!("Person {i}")),
            email: Some(format!("p{i}@{}.example", company.to_lowercase())),
            open_deal_amount: 1000.0 * (i + 1) as f64,
            ..Customer::default()
        };
        f.at = chrono::Utc::now() - chrono::Duration::hours(i as i64);
        f.metadata =
            json!({"company": company, "url": format!("https://support.example/tickets/{i}")});
        assert!(store_feedback(&app, user, f, joining).await.1.is_some());
    }
    let fetch = |query: &'static str| {
        let app = &app;
        let token = token.clone();
        async move {
            app.http
                .get(format!("{}/api/insights/export{query}", app.url))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };

    let r = fetch("").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("insights.csv")
    );
    let text = r.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().clone();
    let rows: Vec<std::collections::HashMap<String, String>> = reader
        .records()
        .map(|r| {
            header
                .iter()
                .map(String::from)
                .zip(r.unwrap().iter().map(String::from))
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), 3, "{text}");
    // The theme of two items first, its newest item first.
    assert_eq!(rows[0]["company"], "Acme");
    assert_eq!(rows[0]["theme_id"], rows[1]["theme_id"]);
    assert_ne!(rows[0]["theme_id"], rows[2]["theme_id"]);
    assert_eq!(rows[0]["quote"], "Please add a bulk export of invoices.");
    assert_eq!(rows[0]["customer_email"], "p0@acme.example");
    assert_eq!(rows[0]["open_deal_amount"], "1000");
    assert_eq!(rows[0]["link"], "https://support.example/tickets/0");
    assert_eq!(
        rows[1]["quote"],
        "'=HYPERLINK(\"https://evil.example\",\"export\") would help us."
    );

    // JSON: themes with their items; the same filters as the lists.
    let r = fetch("?format=json&company=acme").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["truncated"], false);
    let themes = body["themes"].as_array().unwrap();
    assert_eq!(themes.len(), 2, "{body}");
    let quotes: Vec<&str> = themes
        .iter()
        .flat_map(|t| t["items"].as_array().unwrap())
        .map(|i| i["quote"].as_str().unwrap())
        .collect();
    assert_eq!(
        quotes,
        [
            "Please add a bulk export of invoices.",
            "The iOS app signs me out every day."
        ]
    );
    let r = fetch("?format=json&kind=bug").await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["themes"][0]["items"][0]["company"], "Acme");
    assert_eq!(body["themes"].as_array().unwrap().len(), 1);

    let r = fetch("?format=xml").await;
    assert_eq!(r.status(), 422);
    assert_eq!(r.json::<Value>().await.unwrap()["field"], "format");
    let (_, other) = app.user("pm@nobody.example").await;
    let r = app
        .http
        .get(format!("{}/api/insights/export?format=json", app.url))
        .bearer_auth(other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["themes"], json!([]));
}

/// A theme whose mentions this week rise beyond its usual range is announced as
/// `insight.theme.trending`, once that week, and rules act on it; three mentions are not a
/// trend.
#[tokio::test]
async fn a_rising_theme_is_announced_once_and_rules_act_on_it() {
    let app = TestApp::spawn().await;
    let (user, token) = app.user("pm@rising.example").await;
    crate::rules::rule(
        &app,
        &token,
        "when insight.theme.trending then notify text=\"Rising: {{event.title}}, {{event.items}} mentions this week\"",
        false,
    )
    .await;
    let companies = [
        "Globex", "Initech", "Umbrella", "Hooli", "Acme", "Stark", "Wayne",
    ];
    let import = |from: usize, to: usize| {
        let rows: Vec<Value> = (from..to)
            .map(|i| {
                json!({"external_id": format!("r-{i}"),
                       "text": format!("Please add a bulk export of all our invoices to Excel ({}).", companies[i]),
                       "company": companies[i], "occurred_at": chrono::Utc::now().to_rfc3339()})
            })
            .collect();
        let app = &app;
        let token = token.clone();
        async move {
            let r = post(
                app,
                &token,
                "/api/insights/feedback",
                json!({ "rows": rows }),
            )
            .await;
            assert_eq!(r.status(), StatusCode::ACCEPTED);
            for i in from..to {
                wait_read(
                    app,
                    user,
                    crate::doc_id(user, "feedback", &format!("r-{i}")),
                )
                .await;
            }
        }
    };
    let trending = || async {
        app.subject_counts("EVENTS", &format!("events.{user}.insight.theme.trending"))
            .await
            .values()
            .sum::<usize>()
    };
    // Three mentions in a theme that did not exist: not a trend.
    import(0, 3).await;
    let themes = get(&app, &token, "/api/insights/themes").await;
    assert_eq!(themes["themes"].as_array().unwrap().len(), 1, "{themes}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(trending().await, 0);
    // Six this week against nothing before: announced, and the rule's notification says so.
    import(3, 6).await;
    assistant_tests::eventually("the notification", Duration::from_secs(30), || async {
        let seen = get(&app, &token, "/api/notifications").await;
        !seen["notifications"].as_array().unwrap().is_empty()
    })
    .await;
    let seen = get(&app, &token, "/api/notifications").await;
    let text = seen["notifications"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        text.starts_with("Rising: ") && text.contains("mentions this week"),
        "{text}"
    );
    // A seventh mention the same week announces nothing new.
    import(6, 7).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(trending().await, 1);
    let seen = get(&app, &token, "/api/notifications").await;
    assert_eq!(seen["notifications"].as_array().unwrap().len(), 1, "{seen}");
}

/// The weekly digest lists the week's new themes and the ones that rose above their trailing
/// weeks, with that week's quotes (one per account first, none dismissed); a steady theme and
/// a later week's theme are not in it. The digest is left as a notification once, however
/// often the check runs.
#[tokio::test]
async fn the_weekly_digest_lists_new_and_rising_themes_with_quotes_once() {
    let app = TestApp::spawn_only(&[]).await;
    let (user, token) = app.user("pm@digest.example").await;
    let joining = db::insights::Joining {
        join: 0.5,
        ask: 0.5,
        regroup: 0.55,
    };
    let week: chrono::DateTime<chrono::Utc> = "2026-11-16T00:00:00Z".parse().unwrap();
    let day = chrono::Duration::days(1);
    let mut n = 0;
    let mut item = |topic: usize, title: &'static str, at, company: String| {
        n += 1;
        let (app, name) = (&app, format!("d{n}"));
        async move {
            let quote = format!("{title}: we need this ({company}).");
            let mut f = Feedback::new(
                name,
                &quote,
                direction(&[(topic, 1.0), (10 + topic * 20 + n % 15, 0.2)]),
            );
            f.title = Some(title.to_owned());
            f.at = at;
            f.customer.company = Some(company);
            store_feedback(app, user, f, joining).await.1.unwrap()
        }
    };
    // Export: once a week for eight weeks, then six accounts in the digest's week.
    for w in 1..=8 {
        item(
            0,
            "Bulk export",
            week - chrono::Duration::weeks(w) + day,
            format!("Old {w}"),
        )
        .await;
    }
    for c in 0..6 {
        let company = if c < 4 {
            format!("Acct {c}")
        } else {
            "Acct 0".into()
        };
        item(0, "Bulk export", week + day * (c % 6), company).await;
    }
    // Steady: twice a week before and in it.
    for w in 0..=8 {
        for k in 0..2 {
            item(
                1,
                "Dark mode",
                week - chrono::Duration::weeks(w) + day * (2 + k),
                format!("S{k}"),
            )
            .await;
        }
    }
    // SSO: first heard in the week, from two accounts; one of its items dismissed.
    let mut sso = Vec::new();
    for c in 0..3 {
        sso.push(
            item(
                2,
                "SAML single sign-on",
                week + day * 3,
                format!("Sso {}", c % 2),
            )
            .await,
        );
    }
    let dismissed = sso[2].item;
    let (status, _) = post_json(
        &app,
        &token,
        &format!("/api/insights/items/{dismissed}/dismiss"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    // Audit log: first heard the week after.
    item(
        3,
        "Audit log",
        week + chrono::Duration::weeks(1) + day,
        "Later".into(),
    )
    .await;

    let digest = get(&app, &token, "/api/insights/digest?week=2026-11-19").await;
    assert_eq!(digest["week"], "2026-11-16", "{digest}");
    let titles = |section: &str| -> Vec<String> {
        digest[section]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["title"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(titles("new"), ["SAML single sign-on"], "{digest}");
    assert_eq!(titles("rising"), ["Bulk export"], "{digest}");
    let sso = &digest["new"][0];
    assert_eq!(
        (sso["items"].as_i64(), sso["accounts"].as_i64()),
        (Some(2), Some(2))
    );
    let quotes: Vec<&str> = sso["quotes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["item_id"].as_str().unwrap())
        .collect();
    assert!(!quotes.contains(&dismissed.to_string().as_str()), "{sso}");
    let export = &digest["rising"][0];
    assert_eq!(
        (export["items"].as_i64(), export["accounts"].as_i64()),
        (Some(6), Some(4))
    );
    assert_eq!(export["baseline"].as_f64(), Some(1.0));
    assert!(export["p_value"].as_f64().unwrap() < 0.01, "{export}");
    // Three quotes, from three different accounts before any account's second.
    let companies: std::collections::HashSet<&str> = export["quotes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["company"].as_str().unwrap())
        .collect();
    assert_eq!(companies.len(), 3, "{export}");
    // The week after holds only Audit log, as new; weeks are any day's Monday.
    let after = get(&app, &token, "/api/insights/digest?week=2026-11-29").await;
    assert_eq!(after["new"][0]["title"], "Audit log", "{after}");
    assert_eq!(after["rising"], json!([]), "{after}");
    let r = app
        .http
        .get(format!("{}/api/insights/digest?week=monday", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("week"));

    // On the Tuesday after, the digest is left once, however often the check runs.
    let tuesday = week + chrono::Duration::weeks(1) + day;
    db::digest::send_due(&app.db, tuesday).await.unwrap();
    db::digest::send_due(&app.db, tuesday + chrono::Duration::hours(1))
        .await
        .unwrap();
    let seen = get(&app, &token, "/api/notifications").await;
    let texts: Vec<&str> = seen["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 1, "{seen}");
    assert!(
        texts[0].starts_with("Insights digest, week of 16 Nov 2026: 1 new and 1 rising themes."),
        "{}",
        texts[0]
    );
    assert!(texts[0].contains("\nNew: SAML single sign-on (2 mentions, 2 accounts) — “SAML single sign-on: we need this (Sso"), "{}", texts[0]);
    assert!(
        texts[0].contains("\nRising: Bulk export (6 mentions, 4 accounts)"),
        "{}",
        texts[0]
    );
    assert_eq!(
        seen["notifications"][0]["id"],
        db::digest::notification_id(user, week.date_naive()).to_string()
    );
}

/// Who asked, and what they were worth then: the HubSpot sync keeps each account's lifecycle
/// stage, revenue properties and deals with when each changed (`propertiesWithHistory`); an
/// item records its account as it stood when it was said, and shows it as it stands now
/// beside it; later CRM changes (and re-reading the message) leave the record as it was;
/// themes sort and filter by it; and the accounts that churned are found with what they asked
/// for in the days before.
#[tokio::test]
async fn items_keep_what_their_account_was_worth_when_said_and_churned_accounts_are_found() {
    let hubspot = crate::crm_fakes::FakeHubSpot::start().await;
    let mut config = assistant_tests::test_config().await;
    hubspot.configure(&mut config);
    config.sync_interval_secs = 0;
    let app = TestApp::spawn_with(config, &["ingest", "embedding"]).await;
    let (user, token) = app.user("pm@accounts.example").await;
    crate::assistant_writes::connect_hubspot(&app, &hubspot, user).await;
    db::sync_state::ensure(&app.db, user, "hubspot")
        .await
        .unwrap();
    // The team's revenue lives in a custom `arr`, else `annualrevenue`; a bad name is refused.
    assert_eq!(
        settings_refused(
            &app,
            &token,
            json!({"enabled": true, "revenue_properties": ["arr", "Annual Revenue"]})
        )
        .await,
        "revenue_properties[1]"
    );
    enable(
        &app,
        &token,
        json!({"enabled": true, "revenue_properties": ["arr", "annualrevenue"], "churn_stages": ["Churned"]}),
    )
    .await;

    let ms = |day: &str| {
        format!("{day}T00:00:00Z")
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
            .timestamp_millis()
    };
    let sync = || async {
        crate::sync::syncer(&app)
            .handle(
                user,
                crate::sync::command(
                    common::events::Resource::Hubspot,
                    common::events::SyncScope::Changes,
                ),
                format!("TEST:{}", uuid::Uuid::new_v4()),
            )
            .await
            .unwrap();
    };
    {
        let mut h = hubspot.state.lock().unwrap();
        h.put(
            "contacts",
            "1",
            ms("2026-03-01"),
            json!({"firstname": "Dana", "lastname": "Reyes", "email": "dana@acme.example"}),
        );
        h.put(
            "contacts",
            "2",
            ms("2026-03-01"),
            json!({"firstname": "Lee", "lastname": "Park", "email": "lee@globex.example"}),
        );
        h.associate("contacts:1", "companies:9001");
        h.associate("contacts:2", "companies:9002");
        // Acme: a customer paying 90k with a 48k renewal open, until it churned on 1 September.
        h.put("companies", "9001", ms("2026-03-01"), json!({"name": "Acme Corp", "lifecyclestage": "customer", "arr": "90000", "annualrevenue": "1000000"}));
        h.put("companies", "9001", ms("2026-09-01"), json!({"name": "Acme Corp", "lifecyclestage": "churned", "arr": "0", "annualrevenue": "1000000"}));
        h.put(
            "deals",
            "7001",
            ms("2026-03-01"),
            json!({"dealname": "Acme renewal", "amount": "48000", "dealstage": "contractsent"}),
        );
        h.put(
            "deals",
            "7001",
            ms("2026-09-01"),
            json!({"dealname": "Acme renewal", "amount": "48000", "dealstage": "closedlost"}),
        );
        h.associate("companies:9001", "deals:7001");
        // Globex: 50k, growing to 80k and in renewal since October, with a 20k expansion from
        // August (associated from the deal's side).
        h.put(
            "companies",
            "9002",
            ms("2026-03-01"),
            json!({"name": "Globex", "lifecyclestage": "customer", "arr": "50000"}),
        );
        h.put(
            "companies",
            "9002",
            ms("2026-10-01"),
            json!({"name": "Globex", "lifecyclestage": "renewal", "arr": "80000"}),
        );
        h.put("deals", "7002", ms("2026-08-01"), json!({"dealname": "Globex expansion", "amount": "20000", "dealstage": "appointmentscheduled"}));
        h.associate("deals:7002", "companies:9002");
    }
    sync().await;

    let rows = |rows: &[(&str, &str, &str, &str)]| {
        json!({"rows": rows.iter().map(|(id, email, text, at)| json!({
            "external_id": id, "customer_email": email, "text": text, "occurred_at": format!("{at}T12:00:00Z"),
        })).collect::<Vec<_>>()})
    };
    let feedback = [
        (
            "a-early",
            "dana@acme.example",
            "Please add single sign-on with Okta for our whole team.",
            "2026-04-01",
        ),
        (
            "a-late",
            "dana@acme.example",
            "Please add single sign-on with Okta, our security team insists.",
            "2026-07-15",
        ),
        (
            "g-early",
            "lee@globex.example",
            "Please add single sign-on with Okta for our staff.",
            "2026-04-02",
        ),
        (
            "g-late",
            "lee@globex.example",
            "Please add a bulk export of all invoices to Excel.",
            "2026-11-16",
        ),
    ];
    let r = post(&app, &token, "/api/insights/feedback", rows(&feedback)).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    for (id, ..) in &feedback {
        wait_read(&app, user, crate::doc_id(user, "feedback", id)).await;
    }
    let item = |items: &Value, external_id: &str| -> Value {
        items["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["external_id"] == external_id)
            .unwrap_or_else(|| panic!("no item of {external_id}: {items}"))
            .clone()
    };
    let items = get(&app, &token, "/api/insights/items").await;
    // Acme in July: a customer at 90k (the first revenue property with a number), the renewal
    // open; now churned, at 0, nothing open.
    let a = item(&items, "a-late");
    assert_eq!(a["company"], "Acme Corp");
    assert_eq!(a["customer"]["lifecycle_stage"], "customer", "{a}");
    assert_eq!(a["customer"]["revenue"], 90000.0, "{a}");
    assert_eq!(
        (
            a["customer"]["open_deals"].as_i64(),
            a["customer"]["open_deal_amount"].as_f64()
        ),
        (Some(1), Some(48000.0))
    );
    assert_eq!(
        a["account_now"],
        json!({"lifecycle_stage": "churned", "open_deals": 0, "open_deal_amount": 0.0, "revenue": 0.0})
    );
    // Globex in April: 50k, the expansion not yet created; now 80k in renewal with it open.
    let g = item(&items, "g-early");
    assert_eq!(g["customer"]["revenue"], 50000.0, "{g}");
    assert_eq!(g["customer"]["open_deals"], 0, "{g}");
    assert_eq!(
        g["account_now"],
        json!({"lifecycle_stage": "renewal", "open_deals": 1, "open_deal_amount": 20000.0, "revenue": 80000.0})
    );
    assert_eq!(
        item(&items, "g-late")["customer"]["lifecycle_stage"],
        "renewal"
    );

    // Themes by revenue then and now, by accounts, and by the stage they were in.
    let themes = get(&app, &token, "/api/insights/themes?sort=revenue").await;
    let themes = themes["themes"].as_array().unwrap().clone();
    assert_eq!(themes.len(), 2, "{themes:?}");
    let (sso, export) = (&themes[0], &themes[1]);
    assert_eq!(
        (sso["items"].as_i64(), sso["accounts"].as_i64()),
        (Some(3), Some(2)),
        "{sso}"
    );
    // Each account once, as of its latest item: Acme 90k in July + Globex 50k in April.
    assert_eq!(sso["revenue"], 140000.0, "{sso}");
    assert_eq!(sso["revenue_now"], 80000.0, "{sso}");
    assert_eq!(sso["open_deal_amount"], 48000.0, "{sso}");
    assert_eq!(sso["open_deal_amount_now"], 20000.0, "{sso}");
    assert_eq!(
        (export["revenue"].as_f64(), export["revenue_now"].as_f64()),
        (Some(80000.0), Some(80000.0))
    );
    let titles = |v: Value| -> Vec<String> {
        v["themes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (sso_id, export_id) = (
        sso["id"].as_str().unwrap().to_owned(),
        export["id"].as_str().unwrap().to_owned(),
    );
    let r = app
        .http
        .get(format!("{}/api/insights/themes?sort=arr", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("revenue_now"));
    assert_eq!(
        titles(get(&app, &token, "/api/insights/themes?min_accounts=2").await),
        vec![sso_id.clone()]
    );
    assert_eq!(
        titles(get(&app, &token, "/api/insights/themes?lifecycle=Renewal").await),
        vec![export_id]
    );
    let renewal = get(&app, &token, "/api/insights/items?lifecycle=renewal").await;
    assert_eq!(renewal["items"].as_array().unwrap().len(), 1, "{renewal}");

    // Churn: Acme, on 1 September by its lifecycle stage; in the 90 days before it asked for
    // SSO once (April is further back).
    let churn = get(&app, &token, "/api/insights/churned").await;
    assert_eq!(churn["accounts"].as_array().unwrap().len(), 1, "{churn}");
    assert_eq!(churn["accounts"][0]["company"], "Acme Corp");
    assert_eq!(churn["accounts"][0]["via"], "lifecycle");
    assert_eq!(churn["accounts"][0]["churned_at"], "2026-09-01T00:00:00Z");
    assert_eq!(
        churn["themes"],
        json!([{"theme_id": sso_id, "title": sso["title"], "kind": "feature_request", "items": 1, "accounts": 1}])
    );
    assert_eq!(
        churn["items"][0]["quote"],
        "Please add single sign-on with Okta, our security team insists."
    );
    let year = get(&app, &token, "/api/insights/churned?days=365").await;
    assert_eq!(year["items"].as_array().unwrap().len(), 2, "{year}");
    // A lost deal counts when the team says so.
    enable(
        &app,
        &token,
        json!({"enabled": true, "revenue_properties": ["arr"], "churn_stages": ["closedlost"]}),
    )
    .await;
    let by_deal = get(&app, &token, "/api/insights/churned").await;
    assert_eq!(by_deal["accounts"][0]["via"], "deal", "{by_deal}");
    assert_eq!(by_deal["accounts"][0]["stage"], "closedlost");
    let r = app
        .http
        .get(format!("{}/api/insights/churned?days=0", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Acme's revenue is corrected in the CRM later; the item read again keeps July's worth.
    hubspot.state.lock().unwrap().put(
        "companies",
        "9001",
        ms("2026-12-01"),
        json!({"name": "Acme Corp", "lifecyclestage": "churned", "arr": "120000"}),
    );
    sync().await;
    let id = crate::doc_id(user, "feedback", "a-late");
    let before = read_at(&app, id).await;
    ctl::reprocess_insights(
        &app.db,
        &app.bus,
        user,
        &db::documents::KeyFilter {
            source: Some("feedback".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assistant_tests::eventually("read again", Duration::from_secs(30), || async {
        read_at(&app, id).await > before
    })
    .await;
    let a = item(&get(&app, &token, "/api/insights/items").await, "a-late");
    assert_eq!(a["customer"]["revenue"], 90000.0, "{a}");
    assert_eq!(a["account_now"]["revenue"], 120000.0, "{a}");
}

/// Curations are labelled data: a new quote like one a person dismissed is not feedback
/// either, and one closer to a quote they moved than to any theme's centroid goes where they
/// moved it. A quote merely near a dismissed one, or a person's move made in the same
/// message, teaches nothing.
#[tokio::test]
async fn new_items_learn_from_dismissed_and_moved_quotes() {
    let app = TestApp::spawn_only(&[]).await;
    let (user, token) = app.user("pm@taught.example").await;
    let joining = db::insights::Joining {
        join: 0.5,
        ask: 0.5,
        regroup: 0.55,
    };
    let item = |name: &'static str, vector: Vec<f32>| {
        let app = &app;
        async move { curated_item(app, user, name, vector, joining).await }
    };
    // Two themes, A on axis 0 and B on axis 1.
    let (_, a) = item("a0", direction(&[(0, 1.0), (10, 0.1)])).await.unwrap();
    item("a1", direction(&[(0, 1.0), (11, 0.1)])).await.unwrap();
    let (_, b) = item("b0", direction(&[(1, 1.0), (12, 0.1)])).await.unwrap();
    for (name, noise) in [("b1", 13), ("b2", 18), ("b3", 19)] {
        item(name, direction(&[(1, 1.0), (noise, 0.1)]))
            .await
            .unwrap();
    }
    // A quote between them, nearer A: it joins A; a person moves it to B.
    let between = direction(&[(0, 0.8), (1, 0.6)]);
    let (moved, theme) = item("m0", between.clone()).await.unwrap();
    assert_eq!(theme, a);
    let (status, _) = post_json(
        &app,
        &token,
        &format!("/api/insights/items/{moved}/move"),
        json!({"theme": b}),
    )
    .await;
    assert_eq!(status, 200);
    // The same kind of quote again goes to B, where the person put the first.
    let (_, theme) = item("m1", direction(&[(0, 0.8), (1, 0.6), (14, 0.05)]))
        .await
        .unwrap();
    assert_eq!(theme, b, "taught by the move");
    // One squarely on A still goes to A.
    let (_, theme) = item("a2", direction(&[(0, 1.0), (15, 0.1)])).await.unwrap();
    assert_eq!(theme, a);

    // A chat-noise quote on axis 5, dismissed as not feedback.
    let (noise, _) = item("n0", direction(&[(5, 1.0)])).await.unwrap();
    let (status, _) = post_json(
        &app,
        &token,
        &format!("/api/insights/items/{noise}/dismiss"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    // A paraphrase of it is dismissed with it: not stored, in no theme.
    assert!(
        item("n1", direction(&[(5, 1.0), (16, 0.2)]))
            .await
            .is_none(),
        "like the dismissed quote"
    );
    // A neighbour that is not a paraphrase (similarity 0.8) is kept.
    assert!(
        item("n2", direction(&[(5, 0.8), (17, 0.6)]))
            .await
            .is_some()
    );
    let stored = theme_of_items(&app, &token).await;
    assert_eq!(stored.len(), 10, "{stored:?}");
}

/// Everything live about a user's product intelligence, as one text: items with their themes,
/// kinds and curation; themes with titles and counts; message outcomes; settings.
async fn live_tables(app: &TestApp, user: UserId) -> String {
    use sea_orm::ConnectionTrait;
    let mut out = String::new();
    for sql in [
        "SELECT id::text || theme_id::text || kind || pinned::text || coalesce(dismissed_at::text, '')
                || similarity::text AS r FROM insight_items WHERE user_id = $1 ORDER BY id",
        "SELECT id::text || title || items::text || accounts::text || centroid::text AS r
         FROM insight_themes WHERE user_id = $1 ORDER BY id",
        "SELECT document_id::text || status || coalesce(score::text, '') || items::text || classifier AS r
         FROM insight_messages WHERE user_id = $1 ORDER BY document_id",
        "SELECT min_score::text || coalesce(theme_regroup::text, '-') || updated_at::text AS r
         FROM insight_settings WHERE user_id = $1",
    ] {
        for row in app
            .db
            .query_all_raw(sea_orm::Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                sql,
                vec![user.0.into()],
            ))
            .await
            .unwrap()
        {
            out.push_str(&r_str(&row, "r"));
            out.push('\n');
        }
    }
    out
}

/// Waits for a preview to be read and grouped; its JSON.
async fn preview_ready(app: &TestApp, token: &str, id: &str) -> Value {
    let started = std::time::Instant::now();
    loop {
        let p = get(app, token, &format!("/api/insights/previews/{id}")).await;
        if !matches!(p["status"].as_str(), Some("queued" | "running")) {
            assert_eq!(p["status"], "ready", "{p}");
            return p;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "preview not ready: {p}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A team tries candidate settings on a window of its messages before they apply: the same
/// settings agree with the live grouping exactly and keep a moved item only as a
/// constraint; a higher bar and a tighter grouping report the items they would drop and the
/// themes they would split; nothing live changes until applied, applying makes the live
/// tables the preview's, and a preview made against other live items is refused.
#[tokio::test]
async fn a_preview_reports_what_candidate_settings_would_change_and_applies_only_when_asked() {
    let app = TestApp::spawn_only(&["ingest", "embedding"]).await;
    let (user, token) = app.user("pm@preview.example").await;
    load_product_demo(&app, user).await;
    // A person moves an item of the largest theme into another theme; the pipeline then
    // regroups everything at once at the deployment's threshold, keeping the move.
    let themes = get(&app, &token, "/api/insights/themes?limit=100").await;
    let themes = themes["themes"].as_array().unwrap().clone();
    assert!(themes.len() >= 3, "{themes:?}");
    let (big, other) = (&themes[0]["id"], &themes[1]["id"]);
    let items = get(&app, &token, "/api/insights/items?limit=500").await;
    let moved = items["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| &i["theme_id"] == big)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, curation) = post_json(
        &app,
        &token,
        &format!("/api/insights/items/{moved}/move"),
        json!({"theme": other}),
    )
    .await;
    assert_eq!(status, 200, "{curation}");
    let regroup = app.config.insights_theme_regroup;
    db::insights::regroup(&app.db, user, regroup).await.unwrap();
    let live_before = live_tables(&app, user).await;
    let live_items = items["items"].as_array().unwrap().len() as u64;

    // Refusals name the field.
    let window = json!({"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"});
    for (body, field) in [
        (
            json!({"from": "2026-11-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"}),
            "to",
        ),
        (
            json!({"from": "2020-01-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}),
            "to",
        ),
        (
            json!({"from": window["from"], "to": window["to"], "settings": {"min_score": 42}}),
            "settings.min_score",
        ),
        (
            json!({"from": window["from"], "to": window["to"], "settings": {"min_score": "high"}}),
            "settings.min_score",
        ),
        (
            json!({"from": window["from"], "to": window["to"], "settings": {"colour": "red"}}),
            "settings.colour",
        ),
        (
            json!({"from": window["from"], "to": window["to"], "settings": {"theme_regroup": 1.5}}),
            "settings.theme_regroup",
        ),
        (
            json!({"from": window["from"], "to": window["to"], "settings": {"model": "gpt-4o-mini"}}),
            "settings.model",
        ),
    ] {
        let (status, answer) = post_json(&app, &token, "/api/insights/previews", body).await;
        assert_eq!(
            (status, answer["field"].as_str()),
            (422, Some(field)),
            "{answer}"
        );
    }

    // The same settings, through the operator's CLI functions.
    let same = ctl::request_preview(
        &app.db,
        &app.bus,
        &app.config,
        user,
        "ops@preview.example",
        (
            "2026-11-01T00:00:00Z".parse().unwrap(),
            "2026-12-01T00:00:00Z".parse().unwrap(),
        ),
        &ctl::setting_patch(&["model=local".into()]).unwrap(),
    )
    .await
    .unwrap();
    let same = preview_ready(&app, &token, &same.id.to_string()).await;
    let r = &same["report"];
    let messages = same["messages"].as_u64().unwrap();
    assert!(messages >= 20, "{same}");
    assert_eq!(same["read"].as_u64(), Some(messages), "{same}");
    assert_eq!(r["messages"]["read"].as_u64(), Some(messages), "{r}");
    assert_eq!(r["messages"]["live_read"].as_u64(), Some(messages), "{r}");
    assert_eq!(r["items"]["preview"].as_u64(), Some(live_items), "{r}");
    assert_eq!(
        (
            &r["items"]["added"],
            &r["items"]["removed"],
            &r["items"]["changed_kind"]
        ),
        (&json!(0), &json!(0), &json!(0)),
        "{r}"
    );
    assert_eq!(r["agreement"].as_f64(), Some(1.0), "{r}");
    assert_eq!(r["compared"].as_u64(), Some(live_items), "{r}");
    for change in ["formed", "merged", "split", "gone"] {
        assert_eq!(r["themes"][change], json!([]), "{change}: {r}");
    }
    // Grouped freely, the moved item would go back: the move is kept as a constraint.
    let kept: Vec<&str> = r["curations"]["kept_by_constraint"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(kept, vec![curation["id"].as_str().unwrap()], "{r}");
    assert_eq!(
        live_tables(&app, user).await,
        live_before,
        "a preview wrote live rows"
    );

    // A higher bar and a tighter grouping.
    let (status, tight) = post_json(
        &app,
        &token,
        "/api/insights/previews",
        json!({"from": window["from"], "to": window["to"],
               "settings": {"min_score": 8, "theme_regroup": 0.8}}),
    )
    .await;
    assert_eq!(status, 202, "{tight}");
    assert_eq!(tight["requested_by"], "pm@preview.example");
    // One preview at a time per user: each reads its window on the shared model.
    let (status, busy) = post_json(
        &app,
        &token,
        "/api/insights/previews",
        json!({"from": window["from"], "to": window["to"]}),
    )
    .await;
    assert_eq!(status, 409, "{busy}");
    let tight = preview_ready(&app, &token, tight["id"].as_str().unwrap()).await;
    let t = &tight["report"];
    let kept_items = t["items"]["preview"].as_u64().unwrap();
    assert!(kept_items > 0 && kept_items < live_items, "{t}");
    assert_eq!(t["items"]["added"], 0, "a higher bar adds nothing: {t}");
    assert_eq!(
        t["items"]["removed"].as_u64(),
        Some(live_items - kept_items),
        "{t}"
    );
    assert!(
        t["messages"]["below"].as_u64() > same["report"]["messages"]["below"].as_u64(),
        "{t}"
    );
    assert!(
        t["themes"]["preview"].as_u64() > t["themes"]["live"].as_u64(),
        "a tighter grouping splits: {t}"
    );
    assert!(t["agreement"].as_f64().unwrap() < 1.0, "{t}");
    assert_eq!(
        live_tables(&app, user).await,
        live_before,
        "a preview wrote live rows"
    );
    let listed = get(&app, &token, "/api/insights/previews").await;
    assert_eq!(listed["previews"].as_array().unwrap().len(), 2, "{listed}");

    // Applying promotes it; the earlier preview was made against other live items.
    let id = tight["id"].as_str().unwrap();
    let (status, applied) = post_json(
        &app,
        &token,
        &format!("/api/insights/previews/{id}/apply"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{applied}");
    assert_eq!(applied["stored"].as_u64(), Some(kept_items), "{applied}");
    let settings = get(&app, &token, "/api/insights/settings").await;
    assert_eq!(
        (&settings["min_score"], settings["theme_regroup"].as_f64()),
        (&json!(8), Some(0.8)),
        "{settings}"
    );
    let now = get(&app, &token, "/api/insights/items?limit=500").await;
    let now = now["items"].as_array().unwrap();
    assert_eq!(now.len() as u64, kept_items);
    let themes_now = get(&app, &token, "/api/insights/themes?limit=500").await;
    assert_eq!(
        themes_now["themes"].as_array().unwrap().len() as u64,
        t["themes"]["preview"].as_u64().unwrap()
    );
    if let Some(m) = now.iter().find(|i| i["id"] == moved.as_str()) {
        assert_eq!(
            &m["theme_id"], other,
            "the moved item stays where it was put"
        );
    }
    let (status, again) = post_json(
        &app,
        &token,
        &format!("/api/insights/previews/{id}/apply"),
        json!({}),
    )
    .await;
    assert_eq!(status, 409, "{again}");
    let (status, stale) = post_json(
        &app,
        &token,
        &format!(
            "/api/insights/previews/{}/apply",
            same["id"].as_str().unwrap()
        ),
        json!({}),
    )
    .await;
    assert_eq!(status, 409, "{stale}");
    assert!(
        stale["detail"].as_str().unwrap().contains("changed"),
        "{stale}"
    );
    // Another user sees none of it.
    let (_, other_token) = app.user("pm@elsewhere.example").await;
    let r = app
        .http
        .get(format!("{}/api/insights/previews/{id}", app.url))
        .bearer_auth(&other_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[test]
fn setting_pairs_become_the_settings_a_preview_tries() {
    let patch = ctl::setting_patch(&[
        "min_score=4".into(),
        "sources=slack".into(),
        "sources=gmail".into(),
        "product_areas=Billing: invoice, payment".into(),
        "theme_regroup=0.7".into(),
        "channels=[]".into(),
    ])
    .unwrap();
    assert_eq!(
        Value::Object(patch),
        json!({"min_score": 4, "sources": ["slack", "gmail"],
               "product_areas": ["Billing: invoice, payment"], "theme_regroup": 0.7,
               "channels": []})
    );
    assert!(ctl::setting_patch(&["min_score".into()]).is_err());
}
