//! The dashboard's HTML page (server-rendered with maud, which escapes every value).
//!
//! Plain forms with GET: a selection is a shareable URL, and the page works without
//! JavaScript (two one-line handlers only submit a form when a slider or list changes).

use std::sync::Arc;
use std::time::Duration;

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::preview::{Axes, SelectionForm, View};
use super::{query_value, Dashboard};
use crate::catalog::Catalog;
use crate::flow::Origin;
use crate::plan::Plan;
use crate::select;

/// Rows of the file table shown on the page (the JSON API lists them all).
const MAX_ROWS: usize = 500;

const CSS: &str = "
body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1100px}
h1{margin:0 0 .2em}h2{margin:.2em 0 .4em;font-size:1.2em}
.meta{color:#555;font-size:.9em}
section{border:1px solid #ccc;border-radius:6px;padding:.8em 1em;margin:1em 0}
fieldset{display:inline-block;vertical-align:top;border:1px solid #ddd;margin:.2em}
fieldset input[type=text]{width:11em}
.vars{max-height:9em;overflow-y:auto;display:block}
.vars label{display:inline-block;min-width:16em}
.units{color:#777;font-size:.85em}
.error{background:#fde8e8;border:1px solid #d33;color:#900;padding:.6em;border-radius:4px}
table{border-collapse:collapse;font-size:.9em}
td,th{padding:.15em .6em;text-align:left;border-bottom:1px solid #eee}
td.size{text-align:right;font-variant-numeric:tabular-nums}
.cached{color:#070}.missing{color:#999}
#view-form{margin:.4em 0}
#step{width:22em;vertical-align:middle}
a.step{text-decoration:none;padding:0 .4em}
img#map{border:1px solid #ddd;display:block;margin-top:.4em}
textarea{width:100%;font-family:monospace}
";

/// A preview that was built (or found) successfully.
pub struct Preview {
    /// The listed file's name, for a listed file.
    pub file: Option<String>,
    /// Its plan.
    pub plan: Plan,
    /// Where the file came from.
    pub origin: Origin,
    /// How long getting it took.
    pub took: Duration,
    /// Its variables, times and levels.
    pub axes: Axes,
    /// The slice asked for.
    pub view: View,
}

/// Everything the page shows.
pub struct PageData<'a> {
    /// The dashboard.
    pub dashboard: &'a Dashboard,
    /// The catalog, or why it could not be read.
    pub catalog: Result<Arc<Catalog>, Arc<crate::catalog::policy::ReadError>>,
    /// The selection form's values.
    pub form: SelectionForm,
    /// The request's query.
    pub query: Vec<(String, String)>,
    /// The preview, or why there is none.
    pub preview: Option<Result<Preview, String>>,
}

/// Bytes as a short human-readable size.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A URL of `path` with the query `pairs`.
fn url(path: &str, pairs: &[(String, String)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    format!("{path}?{}", s.finish())
}

/// The query pairs that name the selection (without the slice parameters).
fn selection_pairs(query: &[(String, String)]) -> Vec<(String, String)> {
    query
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "var" | "t" | "lv"))
        .cloned()
        .collect()
}

fn with_view(base: &[(String, String)], view: &View) -> Vec<(String, String)> {
    let mut p = base.to_vec();
    if let Some(v) = &view.variable {
        p.push(("var".into(), v.clone()));
    }
    p.push(("t".into(), view.step.to_string()));
    p.push(("lv".into(), view.level.to_string()));
    p
}

/// Renders the whole page.
pub fn render(p: &PageData) -> String {
    let d = p.dashboard;
    let source = d.source();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "sodeda-era5 dashboard" }
                style { (PreEscaped(CSS)) }
            }
            body {
                h1 { "sodeda-era5" }
                p.meta {
                    "source " code { (source.url) }
                    " · deskriptors " code { (d.options.catalog.path.display()) }
                    " · cache " code { (d.options.cache_dir.display()) }
                    " · " a href="/api/status" { "status" }
                    " · " a href="/api/files" { "files (JSON)" }
                }
                @if let Some(pr) = &p.preview {
                    section #preview { (preview(p, pr)) }
                }
                section #selection { (selection(p)) }
                section #files { (files(p)) }
            }
        }
    }
    .into_string()
}

fn preview(p: &PageData, pr: &Result<Preview, String>) -> Markup {
    match pr {
        Err(e) => html! {
            h2 { "Preview" }
            div #error .error role="alert" { strong { "Error: " } (e) }
        },
        Ok(pv) => {
            let base = selection_pairs(&p.query);
            let mut view = pv.view.clone();
            let variable = view
                .variable
                .clone()
                .filter(|v| pv.axes.variables.contains(v))
                .or_else(|| pv.axes.variables.first().cloned());
            view.variable = variable.clone();
            view.clamp(&pv.axes);
            let steps = pv.axes.times.len().max(1);
            let step_link = |t: usize| {
                url(
                    "/",
                    &with_view(
                        &base,
                        &View {
                            step: t,
                            ..view.clone()
                        },
                    ),
                )
            };
            let origin = match pv.origin {
                Origin::Cache => "from the cache",
                Origin::Remote => "copied from the S3 cache",
                Origin::Built => "built from the source",
            };
            html! {
                h2 { "Preview: " code #file-name { (pv.plan.file_name) } }
                p.meta {
                    (human_size(pv.plan.size)) " · " (origin)
                    " in " (format!("{:.2} s", pv.took.as_secs_f64()))
                    " · " (if pv.file.is_some() { "a listed file" } else { "an ad-hoc selection" })
                    " · " (pv.axes.times.len()) " time steps"
                }
                form #view-form method="get" action="/" {
                    @for (k, v) in &base {
                        input type="hidden" name=(k) value=(v);
                    }
                    label { "variable "
                        select name="var" onchange="this.form.submit()" {
                            @for v in &pv.axes.variables {
                                option value=(v) selected[Some(v) == variable.as_ref()] { (v) }
                            }
                        }
                    }
                    @if !pv.axes.levels.is_empty() {
                        " "
                        label { "level "
                            select name="lv" onchange="this.form.submit()" {
                                @for (i, l) in pv.axes.levels.iter().enumerate() {
                                    option value=(i) selected[i == view.level] { (l) " hPa" }
                                }
                            }
                        }
                    }
                    @if steps > 1 {
                        " "
                        @if view.step > 0 {
                            a #prev .step href=(step_link(view.step - 1)) title="earlier" { "◀" }
                        }
                        input #step type="range" name="t" min="0" max=(steps - 1)
                            value=(view.step) onchange="this.form.submit()";
                        @if view.step + 1 < steps {
                            a #next .step href=(step_link(view.step + 1)) title="later" { "▶" }
                        }
                    } @else {
                        input type="hidden" name="t" value="0";
                    }
                    " "
                    span #time { (pv.axes.times.get(view.step).cloned().unwrap_or_default()) " UTC" }
                    noscript { " " button type="submit" { "Show" } }
                }
                img #map src=(url("/map.png", &with_view(&base, &view)))
                    alt=(format!("map of {} at {}", variable.clone().unwrap_or_default(),
                        pv.axes.times.get(view.step).cloned().unwrap_or_default()));
                details {
                    summary { "deskriptor" }
                    pre { (pv.plan.deskriptor.canonical_json()) }
                }
            }
        }
    }
}

/// A field (form name, current value, placeholder).
type Field<'a> = (&'a str, &'a str, &'a str);

/// A "from … to …" pair of text fields with a hint below.
fn range_fields(legend: &str, from: Field, to: Field, hint: &str) -> Markup {
    html! {
        fieldset {
            legend { (legend) }
            label { "from " input type="text" name=(from.0) value=(from.1) placeholder=(from.2); }
            " "
            label { "to " input type="text" name=(to.0) value=(to.1) placeholder=(to.2); }
            div.units { (hint) }
        }
    }
}

fn selection(p: &PageData) -> Markup {
    let source = p.dashboard.source();
    let f = &p.form;
    let hint = |name: &str| {
        source
            .coordinates
            .get(name)
            .map(select::describe)
            .unwrap_or_default()
    };
    html! {
        h2 { "Preview a selection" }
        form #select-form method="get" action="/" {
            (range_fields("time (UTC)", ("time_start", &f.time_start, "2023-01-01T00:00"),
                ("time_end", &f.time_end, "2023-01-01T05:00"), &hint("time")))
            (range_fields("latitude", ("lat_start", &f.lat_start, "60"),
                ("lat_end", &f.lat_end, "35"), &hint("latitude")))
            (range_fields("longitude", ("lon_start", &f.lon_start, "-10"),
                ("lon_end", &f.lon_end, "30"), "0 … 360, or −180 … 180"))
            fieldset {
                legend { "levels" }
                input type="text" name="level" value=(f.level) placeholder="500, 850";
                div.units { "hPa, for variables with levels" }
            }
            fieldset.vars {
                legend { "variables" }
                @for v in source.variables.values() {
                    label {
                        input type="checkbox" name="variable" value=(v.name)
                            checked[f.variables.contains(&v.name)];
                        " " (v.name) " "
                        span.units {
                            (v.attributes.get("units").and_then(|u| u.as_str()).unwrap_or(""))
                            @if v.dims.iter().any(|d| d == "level") { " · levels" }
                        }
                    }
                }
            }
            details open[!f.deskriptor.is_empty()] {
                summary { "or a whole deskriptor (JSON; when given it is used instead of the fields)" }
                textarea name="deskriptor" rows="2" { (f.deskriptor) }
            }
            button #preview-button type="submit" { "Preview" }
        }
    }
}

fn files(p: &PageData) -> Markup {
    let d = p.dashboard;
    match &p.catalog {
        Err(e) => html! {
            h2 { "Files" }
            div.error role="alert" { (e) }
        },
        Ok(c) => {
            let find = query_value(&p.query, "find")
                .unwrap_or("")
                .trim()
                .to_string();
            let page_no: usize = query_value(&p.query, "files")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let (rows, total) = crate::catalog::page(
                &c.entries,
                &find,
                page_no.saturating_mul(MAX_ROWS),
                MAX_ROWS,
            );
            let pages = total.div_ceil(MAX_ROWS).max(1);
            // Links to other pages keep the rest of the query (the previewed selection).
            let at = |n: usize| {
                let mut pairs: Vec<(String, String)> = p
                    .query
                    .iter()
                    .filter(|(k, _)| k != "files")
                    .cloned()
                    .collect();
                pairs.push(("files".into(), n.to_string()));
                url("/", &pairs)
            };
            let kept: Vec<&(String, String)> = p
                .query
                .iter()
                .filter(|(k, _)| k != "files" && k != "find")
                .collect();
            html! {
            h2 { "Files (" (total) @if !find.is_empty() { " named *" (find) "*, of " (c.entries.len()) } ")" }
            form #find-form method="get" action="/" {
                @for (k, v) in &kept { input type="hidden" name=(k) value=(v); }
                label { "Find " input #find type="search" name="find" value=(find) placeholder="part of a name"; }
                button type="submit" { "Find" }
            }
            @if pages > 1 {
                p.meta #file-pages {
                    "page " (page_no.min(pages - 1) + 1) " of " (pages) " "
                    @if page_no > 0 { a #prev-page href=(at(page_no.min(pages) - 1)) { "previous" } " " }
                    @if page_no + 1 < pages { a #next-page href=(at(page_no + 1)) { "next" } }
                }
            }
            table #file-table {
                tr { th { "name" } th { "size" } th { "cache" } th {} }
                @for e in rows {
                    tr {
                        td { code { (e.file_name()) } }
                        td.size { (human_size(e.size)) }
                        @if d.flow.tiers().is_cached(crate::cache::Key::new(e.identity(), e.size)) {
                            td.cached { "cached" }
                        } @else {
                            td.missing { "not built" }
                        }
                        td { a href=(url("/", &[("file".into(), e.file_name().to_string())])) { "preview" } }
                    }
                }
            }
            @if !c.errors.is_empty() {
                h2 { "Bad lines (" (c.errors.len()) ")" }
                ul #bad-lines {
                    @for e in c.errors.iter().take(MAX_ROWS) { li { (e.to_string()) } }
                }
                @if c.errors.len() > MAX_ROWS {
                    p.meta { "… and " (c.errors.len() - MAX_ROWS) " more (`sodeda-era5 validate` lists them all)" }
                }
            }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
    }

    #[test]
    fn urls_escape_values() {
        let u = url("/", &[("file".into(), "a b&c.nc".into())]);
        assert_eq!(u, "/?file=a+b%26c.nc");
    }
}
