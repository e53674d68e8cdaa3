//! Compiling a plain-language standing instruction into a trigger: the model writes the cheap
//! test (`when <event type> [if <condition>]`) in the rule language; the parser checks it, and
//! a trigger that does not parse goes back to the model once with the parser's error. Served
//! on core NATS for the gateway, which answers the user with the compiled trigger.

use crate::model::{Discard, ModelClient};
use async_openai::types::{
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestUserMessage,
};
use common::Bus;
use common::events::{CompileReply, CompileRequest, RULES_COMPILE_SUBJECT};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

const PROMPT: &str = r#"You compile a user's standing instruction, for an assistant that acts on events in their email, calendar, CRM and team chat, into a trigger: the cheap test that picks the events the instruction could concern. The assistant reads each picked event later and decides precisely, so keep the test broad enough to miss nothing the instruction concerns, and narrow where the instruction is clear (a sender, a domain, keywords, a label).

Write the trigger in this language:
  when <event type pattern>[, <another> ...] [if <condition>]
Event types: gmail.email.received, gmail.email.sent, gmail.email.deleted, calendar.event.created, calendar.event.updated, calendar.event.cancelled, hubspot.contact.created, hubspot.contact.updated, hubspot.contact.deleted, hubspot.company.created, hubspot.company.updated, hubspot.deal.created, hubspot.deal.updated, hubspot.note.created, slack.message.posted, slack.message.edited. In a pattern `*` stands for one part and a final `*` for the rest (gmail.*).
Fields. Email: from, from_email, from_domain, from_name, to, to_emails, cc, subject, snippet, labels, thread_id. Calendar: title, start, organizer, attendees, to_emails. HubSpot: object_type, id, title, email, firstname, lastname, company, lifecyclestage, dealname, dealstage, amount. Slack: channel, channel_name, user_name.
Conditions: ==, !=, contains, matches "<regex>", in ["a", "b"], and, or, not, parentheses. Texts are in double quotes; text comparisons ignore case. Lookups: contact_exists(<field>) (a CRM contact has that email), is_client(<field>) (that contact is a customer).

Answer with one JSON object and nothing else:
{"trigger": "when ... [if ...]"}
or, when the text is a preference or a fact to remember rather than something to do when an event arrives:
{"memory": true}"#;

/// Compiles `text`: the trigger (checked), or that it is a memory, or why not.
pub async fn compile(model: &ModelClient, text: &str) -> CompileReply {
    let mut reply = CompileReply {
        model: Some(model.model.clone()),
        ..Default::default()
    };
    let mut messages = vec![
        ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage::from(PROMPT)),
        ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage::from(format!(
            "Instruction: {text}"
        ))),
    ];
    for _ in 0..2 {
        let request = model.request(messages.clone(), Vec::new());
        let completion = match model.complete_from(&request, "", &mut Discard).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                reply.error = Some(format!("the model could not be reached: {e}"));
                return reply;
            }
            Err(never) => match never {},
        };
        reply.input_tokens += completion.input_tokens;
        reply.output_tokens += completion.output_tokens;
        let answer = completion.text;
        let json = answer
            .find('{')
            .zip(answer.rfind('}'))
            .and_then(|(a, b)| serde_json::from_str::<serde_json::Value>(&answer[a..=b]).ok());
        let problem = match &json {
            Some(v) if v["memory"] == true => {
                reply.memory = true;
                return reply;
            }
            Some(v) => match v["trigger"].as_str() {
                Some(trigger) => match rules::parse_rule(&format!("{} then log", trigger.trim())) {
                    Ok(rule) => {
                        reply.trigger = Some(rule.trigger());
                        return reply;
                    }
                    Err(e) => format!(
                        "That trigger does not parse: {e}. Answer again with a corrected trigger."
                    ),
                },
                None => "Answer with {\"trigger\": ...} or {\"memory\": true}.".to_owned(),
            },
            None => "Answer with one JSON object only.".to_owned(),
        };
        messages.push(ChatCompletionRequestMessage::Assistant(
            answer.as_str().into(),
        ));
        messages.push(ChatCompletionRequestMessage::User(
            ChatCompletionRequestUserMessage::from(problem),
        ));
    }
    reply.error = Some("the model did not write a valid trigger; rephrase the instruction or write a structured rule (when <event> [if <condition>] then <action>)".into());
    reply
}

/// Answers compile requests until `cancel` fires.
pub async fn serve(bus: Bus, model: ModelClient, cancel: CancellationToken) -> anyhow::Result<()> {
    let mut requests = bus
        .client
        .queue_subscribe(
            bus.ns.subject(RULES_COMPILE_SUBJECT),
            "rules-compile".to_owned(),
        )
        .await?;
    loop {
        let msg = tokio::select! {
            m = requests.next() => match m { Some(m) => m, None => break },
            _ = cancel.cancelled() => break,
        };
        let (bus, model) = (bus.clone(), model.clone());
        tokio::spawn(async move {
            let Some(reply_to) = msg.reply else { return };
            let reply = match serde_json::from_slice::<CompileRequest>(&msg.payload) {
                Ok(r) => compile(&model, &r.text).await,
                Err(e) => CompileReply {
                    error: Some(format!("bad request: {e}")),
                    ..Default::default()
                },
            };
            let body = serde_json::to_vec(&reply).expect("a reply serializes");
            let _ = bus.client.publish(reply_to, body.into()).await;
        });
    }
    let _ = requests.unsubscribe().await;
    Ok(())
}
