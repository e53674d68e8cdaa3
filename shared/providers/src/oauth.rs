//! OAuth 2.0 with the `oauth2` crate for the three providers: authorization URL with PKCE
//! (S256) and a one-time `state`, code exchange, refresh, and who the grant belongs to.

use crate::ProviderError;
use chrono::Utc;
use common::Config;
use db::connections::TokenSet;
use oauth2::basic::{
    BasicClient, BasicErrorResponse, BasicErrorResponseType, BasicRevocationErrorResponse,
    BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, ExtraTokenFields, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken,
    RequestTokenError, Scope, StandardRevocableToken, StandardTokenResponse, TokenResponse,
    TokenUrl,
};
use serde::{Deserialize, Serialize};

/// Google scopes: profile for sign-in, Gmail modify (read, label, send drafts), Calendar.
pub const GOOGLE_SCOPES: &[&str] = &[
    "openid",
    "email",
    "profile",
    "https://www.googleapis.com/auth/gmail.modify",
    "https://www.googleapis.com/auth/calendar",
];
/// HubSpot scopes: CRM objects the sync reads and the tools write.
pub const HUBSPOT_SCOPES: &[&str] = &[
    "oauth",
    "crm.objects.contacts.read",
    "crm.objects.contacts.write",
    "crm.objects.companies.read",
    "crm.objects.deals.read",
];
/// Slack user scopes: the conversations this person is in, their history, and names. Read
/// with the person's own token, so each user indexes exactly what they can see in Slack,
/// never what the app was invited to by a colleague.
pub const SLACK_USER_SCOPES: &[&str] = &[
    "channels:history",
    "channels:read",
    "groups:history",
    "groups:read",
    "users:read",
];
/// Slack bot scopes: posting as the app.
pub const SLACK_SCOPES: &[&str] = &["chat:write"];

/// Slack's `oauth.v2.access` answers with the workspace next to the (bot) token, and the
/// person who installed with their own token under `authed_user`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlackFields {
    pub team: Option<SlackTeam>,
    pub bot_user_id: Option<String>,
    pub authed_user: Option<SlackAuthedUser>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlackAuthedUser {
    pub id: String,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlackTeam {
    pub id: String,
    pub name: Option<String>,
}

impl ExtraTokenFields for SlackFields {}

type Standard =
    BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;
type SlackResponse = StandardTokenResponse<SlackFields, BasicTokenType>;
type SlackUnset = oauth2::Client<
    BasicErrorResponse,
    SlackResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
>;
type SlackClient = oauth2::Client<
    BasicErrorResponse,
    SlackResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// A provider users can connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    Google,
    Hubspot,
    Slack,
}

impl Provider {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "google" => Some(Self::Google),
            "hubspot" => Some(Self::Hubspot),
            "slack" => Some(Self::Slack),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Google => "google",
            Self::Hubspot => "hubspot",
            Self::Slack => "slack",
        }
    }
}

/// What a successful code exchange gives: tokens and the account they belong to.
#[derive(Debug, Clone)]
pub struct Grant {
    pub tokens: TokenSet,
    pub scopes: String,
    /// Google `sub`, HubSpot portal id, Slack team id.
    pub account_id: String,
    /// Google email, HubSpot domain, Slack team name.
    pub account_name: String,
    /// Slack only: the member id of the person who connected.
    pub account_user: Option<String>,
    /// Google only: the verified email the user signs in with.
    pub email: Option<String>,
}

/// An authorization request to send the browser to.
pub struct Authorization {
    pub url: String,
    pub verifier: String,
}

#[derive(Clone)]
pub struct OAuth {
    http: reqwest::Client,
    google: Option<Standard>,
    hubspot: Option<Standard>,
    slack: Option<SlackClient>,
    google_userinfo: String,
    hubspot_api: String,
}

fn redirect(config: &Config, provider: Provider) -> Result<RedirectUrl, ProviderError> {
    let base = config.public_url.trim_end_matches('/');
    RedirectUrl::new(format!("{base}/api/auth/{}/callback", provider.as_str()))
        .map_err(|e| ProviderError::Config(format!("PUBLIC_URL: {e}")))
}

fn url<T>(
    value: &str,
    name: &str,
    make: fn(String) -> Result<T, url::ParseError>,
) -> Result<T, ProviderError> {
    make(value.to_owned()).map_err(|e| ProviderError::Config(format!("{name}: {e}")))
}

impl OAuth {
    pub fn new(config: &Config, http: reqwest::Client) -> Result<Self, ProviderError> {
        let google = if config.google_client_id.is_empty() {
            None
        } else {
            Some(
                BasicClient::new(ClientId::new(config.google_client_id.clone()))
                    .set_client_secret(ClientSecret::new(config.google_client_secret.clone()))
                    .set_auth_uri(url(
                        &config.google_auth_url,
                        "GOOGLE_AUTH_URL",
                        AuthUrl::new,
                    )?)
                    .set_token_uri(url(
                        &config.google_token_url,
                        "GOOGLE_TOKEN_URL",
                        TokenUrl::new,
                    )?)
                    .set_redirect_uri(redirect(config, Provider::Google)?),
            )
        };
        let hubspot = if config.hubspot_client_id.is_empty() {
            None
        } else {
            let token_url = format!(
                "{}/oauth/v1/token",
                config.hubspot_api_base.trim_end_matches('/')
            );
            Some(
                BasicClient::new(ClientId::new(config.hubspot_client_id.clone()))
                    .set_client_secret(ClientSecret::new(config.hubspot_client_secret.clone()))
                    .set_auth_uri(url(
                        &config.hubspot_auth_url,
                        "HUBSPOT_AUTH_URL",
                        AuthUrl::new,
                    )?)
                    .set_token_uri(url(&token_url, "HUBSPOT_API_BASE", TokenUrl::new)?)
                    // HubSpot reads the client credentials from the form body.
                    .set_auth_type(AuthType::RequestBody)
                    .set_redirect_uri(redirect(config, Provider::Hubspot)?),
            )
        };
        let slack = if config.slack_client_id.is_empty() {
            None
        } else {
            let token_url = format!(
                "{}/oauth.v2.access",
                config.slack_api_base.trim_end_matches('/')
            );
            Some(
                SlackUnset::new(ClientId::new(config.slack_client_id.clone()))
                    .set_client_secret(ClientSecret::new(config.slack_client_secret.clone()))
                    .set_auth_uri(url(&config.slack_auth_url, "SLACK_AUTH_URL", AuthUrl::new)?)
                    .set_token_uri(url(&token_url, "SLACK_API_BASE", TokenUrl::new)?)
                    .set_auth_type(AuthType::RequestBody)
                    .set_redirect_uri(redirect(config, Provider::Slack)?),
            )
        };
        Ok(Self {
            http,
            google,
            hubspot,
            slack,
            google_userinfo: config.google_userinfo_url.clone(),
            hubspot_api: config.hubspot_api_base.trim_end_matches('/').to_owned(),
        })
    }

    pub fn enabled(&self, provider: Provider) -> bool {
        match provider {
            Provider::Google => self.google.is_some(),
            Provider::Hubspot => self.hubspot.is_some(),
            Provider::Slack => self.slack.is_some(),
        }
    }

    /// The provider's authorization URL for this `state`, with a fresh PKCE (S256) pair.
    pub fn authorize(
        &self,
        provider: Provider,
        state: &str,
    ) -> Result<Authorization, ProviderError> {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let csrf = || CsrfToken::new(state.to_owned());
        let url = match provider {
            Provider::Google => {
                self.google
                    .as_ref()
                    .ok_or(ProviderError::NotConfigured(provider.as_str()))?
                    .authorize_url(csrf)
                    .add_scopes(GOOGLE_SCOPES.iter().map(|s| Scope::new((*s).to_owned())))
                    .set_pkce_challenge(challenge)
                    // a refresh token, and earlier grants kept when scopes are added
                    .add_extra_param("access_type", "offline")
                    .add_extra_param("include_granted_scopes", "true")
                    .add_extra_param("prompt", "consent")
                    .url()
                    .0
            }
            Provider::Hubspot => {
                self.hubspot
                    .as_ref()
                    .ok_or(ProviderError::NotConfigured(provider.as_str()))?
                    .authorize_url(csrf)
                    .add_scopes(HUBSPOT_SCOPES.iter().map(|s| Scope::new((*s).to_owned())))
                    .set_pkce_challenge(challenge)
                    .url()
                    .0
            }
            Provider::Slack => {
                self.slack
                    .as_ref()
                    .ok_or(ProviderError::NotConfigured(provider.as_str()))?
                    .authorize_url(csrf)
                    // Slack separates scopes with commas
                    .add_scope(Scope::new(SLACK_SCOPES.join(",")))
                    .add_extra_param("user_scope", SLACK_USER_SCOPES.join(","))
                    .set_pkce_challenge(challenge)
                    .url()
                    .0
            }
        };
        Ok(Authorization {
            url: url.to_string(),
            verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges an authorization code (with its PKCE verifier) and finds out whose it is.
    pub async fn exchange(
        &self,
        provider: Provider,
        code: &str,
        verifier: &str,
    ) -> Result<Grant, ProviderError> {
        let code = AuthorizationCode::new(code.to_owned());
        let verifier = PkceCodeVerifier::new(verifier.to_owned());
        let not_configured = ProviderError::NotConfigured(provider.as_str());
        match provider {
            Provider::Google => {
                let response = self
                    .google
                    .as_ref()
                    .ok_or(not_configured)?
                    .exchange_code(code)
                    .set_pkce_verifier(verifier)
                    .request_async(&self.http)
                    .await
                    .map_err(token_error)?;
                let tokens = token_set(&response);
                let me: GoogleUser = self
                    .http
                    .get(&self.google_userinfo)
                    .bearer_auth(&tokens.access_token)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                if !me.email_verified.unwrap_or(false) {
                    return Err(ProviderError::Refused(
                        "Google account email is not verified".into(),
                    ));
                }
                Ok(Grant {
                    scopes: scopes(&response),
                    account_id: me.sub,
                    account_name: me.email.clone(),
                    account_user: None,
                    email: Some(me.email),
                    tokens,
                })
            }
            Provider::Hubspot => {
                let response = self
                    .hubspot
                    .as_ref()
                    .ok_or(not_configured)?
                    .exchange_code(code)
                    .set_pkce_verifier(verifier)
                    .request_async(&self.http)
                    .await
                    .map_err(token_error)?;
                let tokens = token_set(&response);
                // The token's metadata names the portal (hub) it grants.
                let info: HubspotTokenInfo = self
                    .http
                    .get(format!(
                        "{}/oauth/v1/access-tokens/{}",
                        self.hubspot_api, tokens.access_token
                    ))
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                Ok(Grant {
                    scopes: scopes(&response),
                    account_id: info.hub_id.to_string(),
                    account_name: info.hub_domain.unwrap_or_default(),
                    account_user: None,
                    email: None,
                    tokens,
                })
            }
            Provider::Slack => {
                let response = self
                    .slack
                    .as_ref()
                    .ok_or(not_configured)?
                    .exchange_code(code)
                    .set_pkce_verifier(verifier)
                    .request_async(&self.http)
                    .await
                    .map_err(token_error)?;
                let extra = response.extra_fields();
                let team = extra.team.clone().ok_or_else(|| {
                    ProviderError::Refused("Slack did not name the workspace".into())
                })?;
                // The person's own token: what they can see, not what the bot can.
                let person = extra
                    .authed_user
                    .clone()
                    .filter(|u| u.access_token.as_deref().is_some_and(|t| !t.is_empty()));
                let Some(person) = person else {
                    return Err(ProviderError::Refused(
                        "Slack granted no user access (user_scope)".into(),
                    ));
                };
                Ok(Grant {
                    tokens: TokenSet {
                        access_token: person.access_token.unwrap_or_default(),
                        refresh_token: person.refresh_token,
                        expires_at: person
                            .expires_in
                            .map(|s| Utc::now() + chrono::Duration::seconds(s)),
                    },
                    scopes: person.scope.unwrap_or_default(),
                    account_id: team.id,
                    account_name: team.name.unwrap_or_default(),
                    account_user: Some(person.id),
                    email: None,
                })
            }
        }
    }

    /// Uses a refresh token. `invalid_grant` comes back as [`ProviderError::Revoked`].
    pub async fn refresh(
        &self,
        provider: Provider,
        refresh_token: &str,
    ) -> Result<TokenSet, ProviderError> {
        let token = RefreshToken::new(refresh_token.to_owned());
        let not_configured = ProviderError::NotConfigured(provider.as_str());
        let mut tokens = match provider {
            Provider::Google => token_set(
                &self
                    .google
                    .as_ref()
                    .ok_or(not_configured)?
                    .exchange_refresh_token(&token)
                    .request_async(&self.http)
                    .await
                    .map_err(token_error)?,
            ),
            Provider::Hubspot => token_set(
                &self
                    .hubspot
                    .as_ref()
                    .ok_or(not_configured)?
                    .exchange_refresh_token(&token)
                    .request_async(&self.http)
                    .await
                    .map_err(token_error)?,
            ),
            Provider::Slack => token_set(
                &self
                    .slack
                    .as_ref()
                    .ok_or(not_configured)?
                    .exchange_refresh_token(&token)
                    .request_async(&self.http)
                    .await
                    .map_err(token_error)?,
            ),
        };
        // Providers that do not rotate refresh tokens omit it: the old one stays valid.
        if tokens.refresh_token.is_none() {
            tokens.refresh_token = Some(refresh_token.to_owned());
        }
        Ok(tokens)
    }
}

#[derive(Deserialize)]
struct GoogleUser {
    sub: String,
    email: String,
    email_verified: Option<bool>,
}

#[derive(Deserialize)]
struct HubspotTokenInfo {
    hub_id: i64,
    hub_domain: Option<String>,
}

fn token_set<T: TokenResponse>(response: &T) -> TokenSet {
    TokenSet {
        access_token: response.access_token().secret().clone(),
        refresh_token: response.refresh_token().map(|r| r.secret().clone()),
        expires_at: response
            .expires_in()
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| Utc::now() + d),
    }
}

fn scopes<T: TokenResponse>(response: &T) -> String {
    response
        .scopes()
        .map(|s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn token_error<RE: std::error::Error + 'static>(
    e: RequestTokenError<RE, BasicErrorResponse>,
) -> ProviderError {
    match e {
        RequestTokenError::ServerResponse(r)
            if *r.error() == BasicErrorResponseType::InvalidGrant =>
        {
            ProviderError::Revoked(
                r.error_description()
                    .cloned()
                    .unwrap_or_else(|| "invalid_grant".into()),
            )
        }
        RequestTokenError::ServerResponse(r) => ProviderError::Refused(r.error().to_string()),
        RequestTokenError::Request(e) => ProviderError::Transient(e.to_string()),
        RequestTokenError::Parse(e, _) => {
            ProviderError::Refused(format!("unexpected token response: {e}"))
        }
        RequestTokenError::Other(e) => ProviderError::Refused(e),
    }
}
