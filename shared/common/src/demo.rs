//! The demo tenant's users (`ctl demo load`, `ctl demo load-product`, loaded by `make run`).
//! In development (`APP_ENV=development`) the web console offers a one-click sign-in as each
//! of them that exists; nowhere else.

/// A demo user the console can sign in as.
#[derive(Debug, Clone, Copy)]
pub struct DemoUser {
    /// The name the sign-in request uses (`advisor`, `product`).
    pub key: &'static str,
    pub email: &'static str,
    /// Who it is, for the sign-in button ("advisor").
    pub label: &'static str,
    pub description: &'static str,
}

pub const ADVISOR_EMAIL: &str = "demo@advisor.example";
pub const PRODUCT_EMAIL: &str = "demo@product.example";

pub const USERS: [DemoUser; 2] = [
    DemoUser {
        key: "advisor",
        email: ADVISOR_EMAIL,
        label: "advisor",
        description: "a financial advisor's emails, meetings, CRM and rules",
    },
    DemoUser {
        key: "product",
        email: PRODUCT_EMAIL,
        label: "product team",
        description: "customer feedback from Slack, email and calls, grouped into themes",
    },
];

/// The demo user named `key`.
pub fn user(key: &str) -> Option<&'static DemoUser> {
    USERS.iter().find(|u| u.key == key)
}
