//! Subject and body templates, and the values a run offers them.

use std::collections::BTreeMap;
use std::time::Duration;

use minijinja::value::merge_maps;
use minijinja::{context, Environment, UndefinedBehavior, Value};
use pyscaler_core::{NodeSummary, RunReport, StepStatus};
use serde::Deserialize;

use crate::NotifyError;

const SUCCESS_SUBJECT: &str = "[pyscaler] {{ cluster }}: {{ pipeline }} {{ status }}\
{{ (', ' ~ nodes_added|length ~ ' node(s) added') if nodes_added else '' }}\
{{ (', ' ~ nodes_removed|length ~ ' node(s) removed') if nodes_removed else '' }}";

const SUCCESS_BODY: &str = r#"{{ pipeline }} on cluster {{ cluster }} {{ status }}.

Run:      {{ run_id }}
Trigger:  {{ trigger.name }} ({{ trigger.reason }})
Started:  {{ started_at }}
{% if nodes_added %}

Nodes added:
{% for n in nodes_added %}
  - {{ n|node }}
{% endfor %}
{% endif %}
{% if nodes_removed %}

Nodes removed:
{% for n in nodes_removed %}
  - {{ n|node }}
{% endfor %}
{% endif %}

Steps:
{% for s in steps %}
  - {{ s.name }}: {{ s.status }} in {{ s.duration }}{{ (' (' ~ s.attempts ~ ' attempts)') if s.attempts > 1 else '' }}
{% endfor %}
"#;

const FAILURE_SUBJECT: &str = "[pyscaler] {{ cluster }}: {{ pipeline }} {{ status|upper }}\
{{ (' at step ' ~ failed_step) if failed_step else '' }}";

const FAILURE_BODY: &str = r#"{{ pipeline }} on cluster {{ cluster }} {{ status }}.

Run:      {{ run_id }}
Trigger:  {{ trigger.name }} ({{ trigger.reason }})
Started:  {{ started_at }}
{% if error %}

Error ({{ error.kind }}): {{ error.message }}
{% if error.node %}
Node:     {{ error.node }}
{% endif %}
{% endif %}

Steps:
{% for s in steps %}
  - {{ s.name }}: {{ s.status }}{{ (' in ' ~ s.duration) if s.attempts else '' }}{{ (' (' ~ s.attempts ~ ' attempts)') if s.attempts > 1 else '' }}
{% for n in s.nodes if not n.succeeded %}
      {{ n.node }}: {{ n.summary }}
{% endfor %}
{% if s.error %}
      error: {{ s.error.message }}
{% endif %}
{% endfor %}
{% if undone %}

Undone, last step first:
{% for u in undone %}
{% if u.succeeded %}
  - {{ u.step }}: undone
{% else %}
  - {{ u.step }}: UNDO FAILED{{ (': ' ~ u.error.message) if u.error else '' }}
{% endif %}
{% endfor %}
{% else %}

Nothing was undone.
{% endif %}
{% if nodes_added %}

Nodes added and kept:
{% for n in nodes_added %}
  - {{ n|node }}
{% endfor %}
{% endif %}
{% if nodes_removed %}

Nodes removed:
{% for n in nodes_removed %}
  - {{ n|node }}
{% endfor %}
{% endif %}
"#;

/// A subject and a body template, in minijinja's syntax (Jinja2's).
///
/// They see the run report's fields: `run_id`, `pipeline`, `cluster`,
/// `trigger.name`, `trigger.reason`, `started_at` (`2026-11-27 23:31:48 UTC`), `status` (in words:
/// `succeeded`, `failed`, `completed with failures`, `cancelled`), `steps` and
/// `finally` (each with `name`, `target`, `status`, `attempts`, `duration`,
/// `nodes`, `error`, `undo`), `nodes_added` and `nodes_removed` (each with
/// `id`, `name`, `instance_id`, `address.host`, `address.port`), `error`
/// (`kind`, `message`, `chain`, `node`) and `undone` (`step`, `succeeded`,
/// `error`); and besides: `failed_step` (the name of the step that failed),
/// `succeeded` (a boolean), `reason` and every template variable of the run
/// (also as `vars`). The filter `node` writes a node as
/// `web-03 i-0abc at 10.0.0.3`.
///
/// A name that is not defined is an error, not an empty string, so a typo
/// shows up on the first run rather than as a blank in a mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Templates {
    subject: String,
    body: String,
}

impl Templates {
    /// Templates of your own.
    pub fn new(subject: impl Into<String>, body: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            body: body.into(),
        }
    }

    /// The default for a run that succeeded: the nodes added and removed, and
    /// each step with its duration.
    pub fn scale_out_succeeded() -> Self {
        Self::new(SUCCESS_SUBJECT, SUCCESS_BODY)
    }

    /// The default for a run that failed: the error, the step and node it
    /// happened on, each step's status, and what was undone.
    pub fn scale_out_failed() -> Self {
        Self::new(FAILURE_SUBJECT, FAILURE_BODY)
    }

    /// The subject template.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The body template.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// Checks that both templates parse.
    ///
    /// # Errors
    /// [`NotifyError::Template`] naming the template (`which`) and the line.
    pub fn check(&self, which: &str) -> Result<(), NotifyError> {
        let env = environment();
        for (part, source) in [("subject", &self.subject), ("body", &self.body)] {
            env.template_from_named_str(part, source)
                .map_err(|e| template_error(which, part, source, e))?;
        }
        Ok(())
    }

    /// Renders the subject and the body with `values`.
    pub(crate) fn render(
        &self,
        which: &str,
        values: &Value,
    ) -> Result<(String, String), NotifyError> {
        let env = environment();
        let render = |part: &str, source: &str| {
            env.template_from_named_str(part, source)
                .and_then(|t| t.render(values))
                .map_err(|e| template_error(which, part, source, e))
        };
        Ok((
            render("subject", &self.subject)?,
            render("body", &self.body)?,
        ))
    }
}

fn template_error(which: &str, part: &str, source: &str, e: minijinja::Error) -> NotifyError {
    // minijinja's message says what, not where: add the line it points at.
    let detail = match e
        .line()
        .and_then(|n| source.lines().nth(n.saturating_sub(1)).map(|l| (n, l)))
    {
        Some((n, line)) => format!("{} at line {n}: `{}`", e.kind(), line.trim()),
        None => e.kind().to_string(),
    };
    NotifyError::Template {
        template: format!("{which} {part}"),
        detail,
        source: Box::new(e),
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(true);
    env.add_filter("node", node_filter);
    env
}

/// `web-03 i-0abc at 10.0.0.3` (the port when it is not 22).
fn node_filter(node: Value) -> Result<String, minijinja::Error> {
    let n = NodeSummary::deserialize(node)?;
    let mut out = n.name;
    if let Some(i) = n.instance_id {
        out.push(' ');
        out.push_str(&i);
    }
    if let Some(a) = n.address {
        out.push_str(&format!(" at {a}"));
    }
    Ok(out)
}

/// The values the templates see, from the run report so far and the run's variables.
pub(crate) fn run_values(report: &RunReport, vars: &BTreeMap<String, String>) -> Value {
    let mut report = report.clone();
    for s in report.steps.iter_mut().chain(report.finally.iter_mut()) {
        s.duration = to_millis(s.duration);
        for n in &mut s.nodes {
            n.duration = to_millis(n.duration);
        }
    }
    let failed_step = report
        .steps
        .iter()
        .find(|s| s.status == StepStatus::Failed)
        .map(|s| s.name.clone());
    // The last map wins: the run's variables, then the report, then our words.
    merge_maps([
        Value::from_serialize(vars),
        Value::from_serialize(&report),
        context! {
            status => report.status.to_string(),
            started_at => report.started_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            failed_step => failed_step,
            succeeded => report.is_success(),
            vars => vars,
        },
    ])
}

/// Durations in a mail to the millisecond: `1s 204ms`, not `1s 204ms 33us 12ns`.
fn to_millis(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().try_into().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use pyscaler_core::{
        ErrorKind, ErrorReport, NodeAddress, RunId, RunStatus, StepReport, Target, TriggerInfo,
    };

    use super::*;

    fn report(status: RunStatus) -> RunReport {
        RunReport {
            run_id: RunId::new("run-1"),
            pipeline: "scale-in".into(),
            cluster: "web".into(),
            trigger: TriggerInfo::new("cpu-low", "avg load 0.1 < 0.5 for 10m"),
            started_at: chrono::Utc::now(),
            ended_at: None,
            status,
            steps: vec![StepReport {
                name: "remove-ec2-node".into(),
                target: Target::None,
                status: StepStatus::Succeeded,
                attempts: 3,
                duration: Duration::from_micros(1_204_567),
                nodes: Vec::new(),
                error: None,
                undo: None,
            }],
            finally: Vec::new(),
            nodes_added: Vec::new(),
            nodes_removed: vec![NodeSummary {
                id: "i-0old".into(),
                name: "web-01".into(),
                instance_id: Some("i-0old".into()),
                address: Some(NodeAddress::new("10.0.0.1")),
            }],
            error: None,
            undone: Vec::new(),
            resumed_from: None,
        }
    }

    fn render(t: &Templates, r: &RunReport) -> (String, String) {
        let vars = BTreeMap::from([("region".to_string(), "eu-west-1".to_string())]);
        t.render("test", &run_values(r, &vars)).expect("renders")
    }

    #[test]
    fn the_default_templates_parse() {
        Templates::scale_out_succeeded()
            .check("success")
            .expect("parses");
        Templates::scale_out_failed()
            .check("failure")
            .expect("parses");
    }

    #[test]
    fn a_scale_in_names_the_removed_nodes_and_rounds_durations() {
        let (subject, body) = render(
            &Templates::scale_out_succeeded(),
            &report(RunStatus::Succeeded),
        );
        assert_eq!(
            subject,
            "[pyscaler] web: scale-in succeeded, 1 node(s) removed"
        );
        assert!(
            body.contains("Nodes removed:\n  - web-01 i-0old at 10.0.0.1\n"),
            "{body}"
        );
        assert!(
            body.contains("  - remove-ec2-node: succeeded in 1s 204ms (3 attempts)\n"),
            "{body}"
        );
        assert!(!body.contains("Nodes added"), "{body}");
    }

    #[test]
    fn a_cancelled_run_uses_words_and_has_no_failed_step() {
        let mut r = report(RunStatus::Cancelled);
        r.error = Some(ErrorReport {
            kind: ErrorKind::Cancelled,
            message: "cancelled".into(),
            chain: vec!["cancelled".into()],
            node: None,
        });
        let (subject, body) = render(&Templates::scale_out_failed(), &r);
        assert_eq!(subject, "[pyscaler] web: scale-in CANCELLED");
        assert!(body.contains("Error (cancelled): cancelled\n"), "{body}");
        assert!(body.contains("Nothing was undone.\n"), "{body}");
        assert!(!body.contains("Node:"), "{body}");
    }

    #[test]
    fn run_variables_are_there_and_the_report_wins_a_clash() {
        let t = Templates::new(
            "{{ region }} {{ vars.region }} {{ trigger.name }} {{ succeeded }}",
            "{{ reason }}",
        );
        let mut vars = BTreeMap::from([("region".to_string(), "eu-west-1".to_string())]);
        vars.insert(
            "trigger".into(),
            "a string that must not hide the report's".into(),
        );
        vars.insert("reason".into(), "asked by alice".into());
        let (subject, body) = t
            .render("test", &run_values(&report(RunStatus::Succeeded), &vars))
            .expect("renders");
        assert_eq!(subject, "eu-west-1 eu-west-1 cpu-low True");
        assert_eq!(body, "asked by alice");
    }
}
