//! The approval boundary and the shared limits under attack (issue 20): each test names the
//! attack it replays, and each fails on the code before its fix.

use crate::assistant_writes::EMAIL;
use crate::rules::{count, engine_idle, get_json, post_rule, publish, rule, rules_app};
use assistant_tests::eventually;
use serde_json::{Value, json};
use std::time::Duration;

/// Attack: `when a.b if ` + 1,975 × `(` + `x then log` (under the 2,000-character limit)
/// overflowed a gateway worker's stack and aborted the replica with everyone's requests. Now
/// it is a 422 naming where the nesting went too deep, and the gateway keeps serving. A rule
/// whose stored form can no longer be read (nested past serde's depth by an older version, or
/// damaged) is reported and skipped: the user's other rules still list and fire.
#[tokio::test]
async fn a_deeply_nested_rule_is_refused_and_an_unreadable_one_never_stops_the_others() {
    let app = rules_app(None, None, None).await;
    let (user, token) = app.user(EMAIL).await;

    let attack = format!("when a.b if {}x then log", "(".repeat(1_975));
    let r = post_rule(&app, &token, json!({"text": attack})).await;
    assert_eq!(r.status(), 422);
    let error: Value = r.json().await.unwrap();
    assert_eq!(error["code"], "rule_syntax");
    assert_eq!(error["position"]["line"], 1);
    assert_eq!(error["position"]["column"], 13 + rules::parse::MAX_NESTING);
    assert!(
        error["position"]["expected"]
            .as_str()
            .unwrap()
            .contains("nested at most"),
        "{error}"
    );
    let nots = format!("when a.b if {}x then log", "not ".repeat(130));
    assert_eq!(
        post_rule(&app, &token, json!({"text": nots}))
            .await
            .status(),
        422
    );

    let good = rule(
        &app,
        &token,
        "when hubspot.contact.created then notify text=\"new contact {{event.entity_id}}\"",
        false,
    )
    .await;
    // A rule stored deeper than serde_json reads (as ~130 nested `not`s were before).
    let mut deep = json!({"expr": "is", "of": {"operand": "field", "value": ["x"]}});
    for _ in 0..200 {
        deep = json!({"expr": "not", "of": deep});
    }
    let compiled = json!({"patterns": [["hubspot", "contact", "created"]], "condition": deep,
        "steps": [{"step": "act", "name": "log", "params": []}]});
    let broken = uuid::Uuid::new_v4();
    sea_orm::ConnectionTrait::execute_unprepared(
        &app.db,
        &format!(
            "INSERT INTO rules (id, user_id, text, kind, compiled, triggers, act_without_approval, created_at)
             VALUES ('{broken}', '{user}', 'old', 'structured', '{compiled}'::jsonb, '{{hubspot.contact.created}}', false, now() - interval '1 day')"
        ),
    )
    .await
    .unwrap();

    let listed = get_json(&app, &token, "/api/rules").await;
    let ids: Vec<&str> = listed["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [good.to_string()], "{listed}");

    publish(
        &app,
        user,
        "hubspot",
        "contact.created",
        "contact:77",
        json!({"object_type": "contacts", "id": "77"}),
    )
    .await;
    engine_idle(&app).await;
    eventually(
        "the readable rule fired",
        Duration::from_secs(20),
        || async {
            count(
                &app,
                &format!("SELECT count(*) FROM rule_firings WHERE rule_id = '{good}'"),
            )
            .await
                == 1
        },
    )
    .await;
    assert!(app.metrics().await.contains("rules_unreadable_total"));
}
