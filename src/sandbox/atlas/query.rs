//! The Cost Explorer query: the POST body checked field by field, and the rows it selects from the seeded usage.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::sandbox::atlas::data::{
    ATLAS_SERVICES, AtlasCluster, AtlasOrg, AtlasProject, UsageItem, usd_text,
};

/// Body attributes the documentation lists; anything else is reported as unknown.
const KNOWN: [&str; 8] = [
    "startDate",
    "endDate",
    "organizations",
    "projects",
    "clusters",
    "services",
    "groupBy",
    "includePartialMatches",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GroupBy {
    Organizations,
    Projects,
    Clusters,
    Services,
}

/// A POST body that passed validation.
#[derive(Clone, Debug)]
pub(crate) struct CostQuery {
    start: NaiveDate,
    end: NaiveDate,
    organizations: Vec<String>,
    projects: Vec<String>,
    clusters: Vec<String>,
    services: Vec<String>,
    group_by: Option<GroupBy>,
    include_partial_matches: bool,
}

/// One violation, as `badRequestDetail.fields[]` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct FieldViolation {
    pub(crate) field: String,
    pub(crate) description: String,
}

/// One `usageDetails` entry: a sum of usage items sharing month, service and the grouped ids.
#[derive(Clone, Debug)]
pub(crate) struct Row<'a> {
    month: NaiveDate,
    invoice_id: &'a str,
    org_id: &'a str,
    org_name: &'a str,
    project: Option<&'a AtlasProject>,
    cluster: Option<&'a AtlasCluster>,
    service: &'static str,
    cents: i64,
}

type RowKey<'a> = (NaiveDate, &'static str, Option<&'a str>, Option<&'a str>);

impl CostQuery {
    /// Checks every attribute and reports every violation at once.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, Vec<FieldViolation>> {
        // The parser's message is not echoed: it may quote the body.
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
            return Err(vec![violation("body", "must be a JSON object")]);
        };
        let mut bad = Vec::new();
        let start = date(&map, "startDate", &mut bad);
        let end = date(&map, "endDate", &mut bad);
        if let (Some(start), Some(end)) = (start, end)
            && end <= start
        {
            bad.push(violation("endDate", "must be after startDate"));
        }
        let is_id =
            |s: &str| s.len() == 24 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let id_rule = "must be a 24-hexadecimal-digit id";
        let organizations = list(&map, "organizations", is_id, id_rule, &mut bad);
        let projects = list(&map, "projects", is_id, id_rule, &mut bad);
        let clusters = list(&map, "clusters", is_id, id_rule, &mut bad);
        let is_service = |s: &str| ATLAS_SERVICES.contains(&s);
        let services = list(
            &map,
            "services",
            is_service,
            "must be a documented service",
            &mut bad,
        );
        let group_by = match map.get("groupBy") {
            None | Some(Value::Null) => None,
            Some(value) => {
                let parsed = match value.as_str() {
                    Some("organizations") => Some((GroupBy::Organizations, &organizations)),
                    Some("projects") => Some((GroupBy::Projects, &projects)),
                    Some("clusters") => Some((GroupBy::Clusters, &clusters)),
                    Some("services") => Some((GroupBy::Services, &services)),
                    _ => None,
                };
                match parsed {
                    None => {
                        let rule = "must be one of organizations, projects, clusters, services";
                        bad.push(violation("groupBy", rule));
                        None
                    }
                    // Documented: a dimension needs at least one filter value to group by.
                    Some((_, filter)) if filter.is_empty() => {
                        let rule = "needs at least one filter value for its dimension";
                        bad.push(violation("groupBy", rule));
                        None
                    }
                    Some((group_by, _)) => Some(group_by),
                }
            }
        };
        let include_partial_matches = match map.get("includePartialMatches") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(flag)) => *flag,
            Some(_) => {
                bad.push(violation("includePartialMatches", "must be a boolean"));
                false
            }
        };
        for key in map.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
            bad.push(violation(key, "is not a known attribute"));
        }
        match (start, end) {
            (Some(start), Some(end)) if bad.is_empty() => Ok(Self {
                start,
                end,
                organizations,
                projects,
                clusters,
                services,
                group_by,
                include_partial_matches,
            }),
            _ => Err(bad),
        }
    }

    /// Whether an item passes every filter. An item without a value for a filtered
    /// dimension (an org-level charge under a project filter) is a partial match.
    fn selects(&self, item: &UsageItem<'_>) -> bool {
        let listed = |list: &[String], value: Option<&str>| match value {
            _ if list.is_empty() => true,
            Some(value) => list.iter().any(|x| x == value),
            None => self.include_partial_matches,
        };
        listed(&self.organizations, Some(item.org_id))
            && listed(&self.projects, item.project.map(|p| p.id.as_str()))
            && listed(&self.clusters, item.cluster.map(|c| c.id.as_str()))
            && listed(&self.services, Some(item.service))
    }

    /// The rows for `org`: one per month and service, split further by project (and
    /// cluster) when grouped so; ordered by month, service, project id, cluster id.
    pub(crate) fn rows<'a>(&self, org: &'a AtlasOrg) -> Vec<Row<'a>> {
        let by_project = matches!(self.group_by, Some(GroupBy::Projects | GroupBy::Clusters));
        let by_cluster = self.group_by == Some(GroupBy::Clusters);
        let mut groups: BTreeMap<RowKey<'a>, Row<'a>> = BTreeMap::new();
        for item in org.usage(self.start, self.end).filter(|i| self.selects(i)) {
            let project = item.project.filter(|_| by_project);
            let cluster = item.cluster.filter(|_| by_cluster);
            let key = (
                item.month,
                item.service,
                project.map(|p| p.id.as_str()),
                cluster.map(|c| c.id.as_str()),
            );
            let row = groups.entry(key).or_insert(Row {
                month: item.month,
                invoice_id: item.invoice_id,
                org_id: item.org_id,
                org_name: item.org_name,
                project,
                cluster,
                service: item.service,
                cents: 0,
            });
            row.cents += item.amount_cents;
        }
        groups.into_values().collect()
    }
}

/// `{"usageDetails":[…]}`, written by hand so each amount is exactly its decimal text.
pub(crate) fn usage_json(rows: &[Row<'_>]) -> String {
    let mut out = String::from(r#"{"usageDetails":["#);
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        row.write_json(&mut out);
    }
    out.push_str("]}");
    out
}

impl Row<'_> {
    fn write_json(&self, out: &mut String) {
        let mut first = true;
        let mut field = |name: &str, value: &str| {
            out.push(if first { '{' } else { ',' });
            first = false;
            out.push_str(&json_string(name));
            out.push(':');
            out.push_str(value);
        };
        field("invoiceId", &json_string(self.invoice_id));
        field("organizationId", &json_string(self.org_id));
        field("organizationName", &json_string(self.org_name));
        if let Some(project) = self.project {
            field("projectId", &json_string(&project.id));
            field("projectName", &json_string(project.name));
        }
        if let Some(cluster) = self.cluster {
            field("clusterName", &json_string(cluster.name));
            field("clusterId", &json_string(&cluster.id));
        }
        field("service", &json_string(self.service));
        field("usageAmount", &usd_text(self.cents));
        field("usageDate", &json_string(&self.month.to_string()));
        out.push('}');
    }
}

fn json_string(s: &str) -> String {
    // Serialising a string cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}

fn violation(field: &str, description: &str) -> FieldViolation {
    FieldViolation {
        field: field.to_owned(),
        description: description.to_owned(),
    }
}

/// A required `YYYY-MM-DD` that is the first of a month.
fn date(map: &Map<String, Value>, field: &str, bad: &mut Vec<FieldViolation>) -> Option<NaiveDate> {
    let rule = match map.get(field) {
        None | Some(Value::Null) => "is required",
        Some(Value::String(s)) => {
            let shaped = s.len() == 10
                && s.bytes().enumerate().all(|(i, b)| {
                    if i == 4 || i == 7 {
                        b == b'-'
                    } else {
                        b.is_ascii_digit()
                    }
                });
            match NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                Ok(date) if shaped && date.day() == 1 => return Some(date),
                Ok(_) if shaped => "must be the first day of a month",
                _ => "must be a date in YYYY-MM-DD form",
            }
        }
        Some(_) => "must be a date in YYYY-MM-DD form",
    };
    bad.push(violation(field, rule));
    None
}

/// An optional array of strings, each checked by `valid`; bad entries are reported by index.
fn list(
    map: &Map<String, Value>,
    field: &str,
    valid: impl Fn(&str) -> bool,
    rule: &str,
    bad: &mut Vec<FieldViolation>,
) -> Vec<String> {
    let items = match map.get(field) {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => {
            bad.push(violation(field, "must be an array of strings"));
            return Vec::new();
        }
    };
    let mut good = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.as_str() {
            Some(s) if valid(s) => good.push(s.to_owned()),
            _ => bad.push(violation(&format!("{field}[{i}]"), rule)),
        }
    }
    good
}
