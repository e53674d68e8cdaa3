//! What rules may do and ask: the actions (the assistant's write tools plus `create_task`,
//! `notify`, `log` and `ask_assistant`) with their parameters, and the lookups conditions may
//! call.

/// What an action's effect reaches, which decides whether it may run without approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Nothing outside the assistant: a log line, a notification to the user.
    Assistant,
    /// The user's own systems (CRM notes, contacts, tasks): a rule the user marked may do it
    /// without asking.
    OwnSystems,
    /// Other people (an email, an invitation): always waits for the user.
    Others,
    /// The model decides; each write it proposes is checked on its own.
    Delegated,
}

pub struct ActionSpec {
    pub name: &'static str,
    pub summary: &'static str,
    pub required: &'static [&'static str],
    pub optional: &'static [&'static str],
    /// Any other parameter is a property to set (`update_contact lifecyclestage=customer`).
    pub open: bool,
    pub reach: Reach,
}

pub const ACTIONS: &[ActionSpec] = &[
    ActionSpec {
        name: "create_contact",
        summary: "create a HubSpot contact (no-op when the email exists)",
        required: &["email"],
        optional: &["firstname", "lastname", "company", "phone"],
        open: false,
        reach: Reach::OwnSystems,
    },
    ActionSpec {
        name: "create_note",
        summary: "add a note to a HubSpot contact, by id or email",
        required: &["contact", "body"],
        optional: &[],
        open: false,
        reach: Reach::OwnSystems,
    },
    ActionSpec {
        name: "update_contact",
        summary: "set properties of a HubSpot contact, by id or email",
        required: &["contact"],
        optional: &[],
        open: true,
        reach: Reach::OwnSystems,
    },
    ActionSpec {
        name: "create_task",
        summary: "create a HubSpot task (a to-do for the user)",
        required: &[],
        optional: &["title", "type", "priority", "body", "contact", "due"],
        open: false,
        reach: Reach::OwnSystems,
    },
    ActionSpec {
        name: "send_email",
        summary: "send an email from the user's Gmail",
        required: &["to", "subject", "body"],
        optional: &["cc"],
        open: false,
        reach: Reach::Others,
    },
    ActionSpec {
        name: "create_calendar_event",
        summary: "create a calendar event, inviting attendees",
        required: &["summary", "start", "end"],
        optional: &["description", "attendees"],
        open: false,
        reach: Reach::Others,
    },
    ActionSpec {
        name: "notify",
        summary: "tell the user (in the assistant's notifications)",
        required: &["text"],
        optional: &[],
        open: false,
        reach: Reach::Assistant,
    },
    ActionSpec {
        name: "log",
        summary: "record a line in the rule's firing",
        required: &[],
        optional: &["text"],
        open: false,
        reach: Reach::Assistant,
    },
    ActionSpec {
        name: "ask_assistant",
        summary: "let the assistant decide and act with its tools, following the text",
        required: &["text"],
        optional: &[],
        open: false,
        reach: Reach::Delegated,
    },
];

pub fn action(name: &str) -> Option<&'static ActionSpec> {
    ACTIONS.iter().find(|a| a.name == name)
}

pub fn action_names() -> String {
    ACTIONS
        .iter()
        .map(|a| a.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Lookups a condition may call, each with one argument (an email address).
pub const LOOKUPS: &[(&str, &str)] = &[
    (
        "contact_exists",
        "a HubSpot contact with this email address exists",
    ),
    (
        "is_client",
        "a HubSpot contact with this email address is a customer (lifecycle stage)",
    ),
];

pub fn is_lookup(name: &str) -> bool {
    LOOKUPS.iter().any(|(n, _)| *n == name)
}
