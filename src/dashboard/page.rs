//! The dashboard's HTML page (server-rendered with maud, which escapes every value).
//!
//! Plain forms with GET: a selection is a shareable URL, and the page works without
//! JavaScript (two one-line handlers only submit a form when a slider or list changes).

use std::sync::Arc;
use std::time::Duration;

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::preview::{Axes, SelectionForm, StationTable, View};
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
fieldset input[type=text]{width:9em}
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
    /// For a station file: the step's values as a table (shown in place of a map).
    pub stations: Option<Result<StationTable, String>>,
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

use crate::units::human_size;

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
        .filter(|(k, _)| !matches!(k.as_str(), "var" | "t" | "lv" | "scale" | "borders"))
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
    if view.fixed_range {
        p.push(("scale".into(), "all".into()));
    }
    if !view.borders {
        p.push(("borders".into(), "0".into()));
    }
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
                    "source " code { (source.scope.url) }
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
                    a #download href=(url("/download", &base)) download {
                        "download the file (" (human_size(pv.plan.size)) ")"
                    }
                    " · " (origin)
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
                    " "
                    @let too_big = !p.dashboard.offers_fixed_range(pv.plan.size);
                    label title=(if too_big {
                        "offered for files up to --preview-max-size: it reads the whole file"
                    } else {
                        "one colour scale for every step and level, so that they compare"
                    }) {
                        input #scale type="checkbox" name="scale" value="all" disabled[too_big]
                            checked[view.fixed_range && !too_big] onchange="this.form.submit()";
                        " same colours for all steps"
                    }
                    " "
                    // Unchecked sends only the hidden 0; checked sends 0 then 1 (the last wins).
                    input type="hidden" name="borders" value="0";
                    label {
                        input #borders type="checkbox" name="borders" value="1"
                            checked[view.borders] onchange="this.form.submit()";
                        " country borders"
                    }
                    noscript { " " button type="submit" { "Show" } }
                }
                @match &pv.stations {
                    None => {
                        img #map src=(url("/map.png", &with_view(&base, &view)))
                            alt=(format!("map of {} at {}", variable.clone().unwrap_or_default(),
                                pv.axes.times.get(view.step).cloned().unwrap_or_default()));
                    }
                    Some(Err(e)) => {
                        div #error .error role="alert" { strong { "Error: " } (e) }
                    }
                    Some(Ok(t)) => { (station_table(t)) }
                }
                details {
                    summary { "deskriptor" }
                    pre { (pv.plan.deskriptor.canonical_json()) }
                }
            }
        }
    }
}

/// A station file's step as a table: station, grid point, value.
fn station_table(t: &StationTable) -> Markup {
    html! {
        table #stations {
            thead { tr {
                th { "station" } th { "latitude" } th { "longitude" }
                th { (t.variable) @if !t.units.is_empty() { " (" (t.units) ")" } }
            } }
            tbody {
                @for (name, lat, lon, v) in &t.rows {
                    tr {
                        td { (name) } td { (lat) } td { (lon) }
                        td { @if v.is_nan() { "NaN" } @else { (format!("{v:.3}")) } }
                    }
                }
            }
        }
    }
}

/// A field (form name, current value, placeholder).
type Field<'a> = (&'a str, &'a str, &'a str);

/// A "from … to …" pair of fields (degrees) with a hint below; the placeholders say "e.g."
/// so that they do not read as values. Text, not number fields: whatever is typed reaches
/// the server, whose error names the field and what is allowed.
fn range_fields(legend: &str, from: Field, to: Field, hint: &str) -> Markup {
    let example = |f: &Field| format!("e.g. {}", f.2);
    html! {
        fieldset {
            legend { (legend) }
            label { "from " input type="text" inputmode="decimal" name=(from.0) value=(from.1)
                placeholder=(example(&from)); }
            " "
            label { "to " input type="text" inputmode="decimal" name=(to.0) value=(to.1)
                placeholder=(example(&to)); }
            div.units { (hint) }
        }
    }
}

/// Whether a time text is what a date-time picker holds (`YYYY-MM-DDTHH:MM`); a period
/// (`2023-01`, `2023-01-05`) or seconds keep a text field, so nothing written is lost.
fn picker_value(v: &str) -> bool {
    chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M").is_ok()
}

/// The time range as two date-time pickers (hourly steps, bounded by the store's time axis),
/// or text fields for values a picker cannot hold.
fn time_fields(f: &SelectionForm, bounds: Option<(String, String)>, hint: &str) -> Markup {
    let (min, max) = bounds.unwrap_or_default();
    let field = |name: &str, value: &str| {
        html! {
            @if value.is_empty() || picker_value(value) {
                input type="datetime-local" step="3600" name=(name) value=(value)
                    min=(min) max=(max);
            } @else {
                input type="text" name=(name) value=(value);
            }
        }
    };
    html! {
        fieldset #time-fields {
            legend { "time (UTC)" }
            label { "from " (field("time_start", &f.time_start)) }
            " "
            label { "to " (field("time_end", &f.time_end)) }
            div.units { (hint) }
        }
    }
}

/// Regions offered by the region picker: name, then north, south, west, east (degrees; west
/// and east in −180 … 180).
const REGIONS: [(&str, [f64; 4]); 8] = [
    ("Europe", [72.0, 34.0, -25.0, 45.0]),
    ("Alps", [49.0, 43.0, 5.0, 17.0]),
    ("Switzerland", [48.0, 45.75, 5.75, 10.75]),
    ("British Isles", [61.0, 49.0, -11.0, 2.0]),
    ("Mediterranean", [46.0, 30.0, -6.0, 37.0]),
    ("North Atlantic", [70.0, 20.0, -80.0, 0.0]),
    ("North America", [72.0, 15.0, -170.0, -50.0]),
    ("Whole globe", [90.0, -90.0, -180.0, 179.75]),
];

/// A picker that fills the latitude and longitude fields with a region.
fn region_picker() -> Markup {
    // Small and inline: sets the four fields from the chosen option's data.
    const FILL: &str = "var o=this.selectedOptions[0];if(!o.dataset.b)return;\
        var b=o.dataset.b.split(','),f=this.form;\
        f.lat_start.value=b[0];f.lat_end.value=b[1];f.lon_start.value=b[2];f.lon_end.value=b[3];";
    html! {
        fieldset #region-fields {
            legend { "region" }
            select #region onchange=(FILL) {
                option value="" { "pick a region…" }
                @for (name, b) in REGIONS {
                    option data-b=(format!("{},{},{},{}", b[0], b[1], b[2], b[3])) { (name) }
                }
            }
            div.units { "fills latitude and longitude" }
        }
    }
}

fn selection(p: &PageData) -> Markup {
    let source = p.dashboard.source();
    let f = &p.form;
    let hint = |name: &str| {
        source
            .scope
            .coordinates
            .get(name)
            .map(select::describe)
            .unwrap_or_default()
    };
    let time_bounds = source.scope.coordinates.get("time").and_then(|c| {
        let t = c.time.as_ref()?;
        let at = |v: f64| select::fmt_instant(t.instant(v as i64));
        Some((at(*c.values.first()?), at(*c.values.last()?)))
    });
    html! {
        h2 { "Preview a selection" }
        form #select-form method="get" action="/" {
            (time_fields(f, time_bounds, &hint("time")))
            (region_picker())
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
                @for v in source.scope.variables.values() {
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
    fn urls_escape_values() {
        let u = url("/", &[("file".into(), "a b&c.nc".into())]);
        assert_eq!(u, "/?file=a+b%26c.nc");
    }
}
