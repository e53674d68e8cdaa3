//! What CRM accounts were worth over time, so an insight keeps what its account was worth
//! when it was said. `crm_history` holds each tracked property's values with when each was
//! set (HubSpot's `propertiesWithHistory`), for companies (lifecycle stage and the revenue
//! properties a team names), deals (stage and amount) and contacts (lifecycle stage).
//! `crm_value_at` reads a property as of a time; `crm_account_at` a company's lifecycle stage
//! and open deals as of a time. Records synced before this migration get their current values
//! as standing since `-infinity` (the past is unknown; the value first seen stands for it).

use sea_orm_migration::prelude::*;

sql_migration!();

const UP: &str = r#"
CREATE TABLE IF NOT EXISTS crm_history (
    user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    object_type text NOT NULL,
    object_id   text NOT NULL,
    property    text NOT NULL,
    value       text,
    changed_at  timestamptz NOT NULL,
    PRIMARY KEY (user_id, object_type, object_id, property, changed_at)
);
CREATE INDEX IF NOT EXISTS crm_history_churn ON crm_history (user_id, property, value);

CREATE OR REPLACE FUNCTION crm_value_at(u uuid, otype text, oid text, prop text, t timestamptz)
RETURNS text LANGUAGE sql STABLE AS $$
  SELECT value FROM crm_history
  WHERE user_id = u AND object_type = otype AND object_id = oid AND property = prop
    AND changed_at <= t
  ORDER BY changed_at DESC LIMIT 1
$$;

-- Deals by the companies they are associated with (`crm_company_deals`' second half), so a
-- theme list's accounts do not each scan the user's deals.
CREATE INDEX IF NOT EXISTS documents_deal_companies
    ON documents USING gin ((metadata->'associations'->'companies'))
    WHERE source = 'hubspot' AND kind = 'deal';

-- A company's deals, associated from either side.
CREATE OR REPLACE FUNCTION crm_company_deals(u uuid, company text)
RETURNS SETOF text LANGUAGE sql STABLE AS $$
  SELECT jsonb_array_elements_text(coalesce(metadata->'associations'->'deals', '[]'))
  FROM documents
  WHERE user_id = u AND source = 'hubspot' AND kind = 'company'
    AND external_id = 'company:' || company
  UNION
  SELECT metadata->>'id' FROM documents
  WHERE user_id = u AND source = 'hubspot' AND kind = 'deal'
    AND metadata->'associations'->'companies' @> jsonb_build_array(company)
$$;

-- A company's lifecycle stage and open deals (neither won nor lost) as of `t`: a deal with
-- no stage recorded by then did not exist yet.
CREATE OR REPLACE FUNCTION crm_account_at(u uuid, company text, t timestamptz,
    OUT lifecycle_stage text, OUT open_deals integer, OUT open_deal_amount double precision)
LANGUAGE sql STABLE AS $$
  SELECT crm_value_at(u, 'company', company, 'lifecyclestage', t),
         (count(*) FILTER (WHERE s.open))::integer,
         coalesce(sum(CASE WHEN s.open AND s.amount ~ '^[0-9]+(\.[0-9]+)?$'
                           THEN s.amount::double precision END), 0)
  FROM (SELECT coalesce(st.stage NOT IN ('closedwon', 'closedlost'), false) AS open, st.amount
        FROM (SELECT crm_value_at(u, 'deal', d, 'dealstage', t) AS stage,
                     crm_value_at(u, 'deal', d, 'amount', t) AS amount
              FROM crm_company_deals(u, company) d) st) s
$$;

-- Curated items teach new ones (a quote like a dismissed one is dismissed, one like a quote
-- placed by hand goes where it was placed): a user's curated items, found without a scan.
CREATE INDEX IF NOT EXISTS insight_items_curated ON insight_items (user_id)
    WHERE pinned OR dismissed_at IS NOT NULL;

-- Per team: which company properties hold revenue, and which lifecycle or deal stages mean
-- the account churned.
ALTER TABLE insight_settings
    ADD COLUMN IF NOT EXISTS revenue_properties text[] NOT NULL DEFAULT '{annualrevenue}',
    ADD COLUMN IF NOT EXISTS churn_stages text[] NOT NULL DEFAULT '{churned}';

INSERT INTO crm_history (user_id, object_type, object_id, property, value, changed_at)
SELECT d.user_id, d.kind, d.metadata->>'id', p.property, d.metadata->'properties'->>p.property,
       '-infinity'
FROM documents d
JOIN (VALUES ('company', 'lifecyclestage'), ('company', 'annualrevenue'),
             ('contact', 'lifecyclestage'), ('deal', 'dealstage'), ('deal', 'amount'))
     AS p(kind, property) ON p.kind = d.kind
WHERE d.source = 'hubspot' AND d.metadata->>'id' IS NOT NULL
  AND d.metadata->'properties'->>p.property IS NOT NULL
ON CONFLICT DO NOTHING;
"#;

const DOWN: &str = "
DROP INDEX IF EXISTS insight_items_curated;
DROP INDEX IF EXISTS documents_deal_companies;
ALTER TABLE insight_settings DROP COLUMN IF EXISTS revenue_properties,
    DROP COLUMN IF EXISTS churn_stages;
DROP FUNCTION IF EXISTS crm_account_at(uuid, text, timestamptz);
DROP FUNCTION IF EXISTS crm_company_deals(uuid, text);
DROP FUNCTION IF EXISTS crm_value_at(uuid, text, text, text, timestamptz);
DROP TABLE IF EXISTS crm_history;
";
