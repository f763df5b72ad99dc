//! The shipped templates (examples/nginx, examples/k8s-deploy) and one that
//! calls every template function on store values, rendered against keys
//! and values an attacker who can write the store chose.
#![no_main]

use std::collections::BTreeMap;
use std::sync::Arc;

use nap_hooks::resource::Resource;
use nap_hooks::source::KeyValues;

const EVERY_FUNCTION: &str = r#"
{%- for name in ls(key="/") %}{{ getv(key="/" ~ name, default="") }}{% endfor %}
{%- for name in lsdir(key="/") %}{{ base(path=name) }}{{ dir(path=name) }}{% endfor %}
{%- for kv in gets(key="/*") %}{{ kv.key }}={{ kv.value }}{% endfor %}
{{ getvs(key="/*") | length }} {{ exists(key="/json") }}
{{ json(value=getv(key="/json", default="{}")) }}
{{ json_array(value=getv(key="/array", default="[]")) }}
{{ base64_decode(value=getv(key="/base64", default="")) }}
{{ base64_encode(value=getv(key="/text", default="")) }}
{{ parse_bool(value=getv(key="/bool", default="true")) }}
{{ atoi(value=getv(key="/number", default="0")) }}
{{ shell_quote(value=getv(key="/text", default="")) }}
{{ join(values=split(value=getv(key="/text", default=""), sep=","), sep=";") }}
{{ contains(value=getv(key="/text", default=""), substr="x") }}
{{ replace(value=getv(key="/text", default=""), old="a", new="b") }}
{{ trim_suffix(value=getv(key="/text", default=""), suffix=".") }}
{{ to_upper(value=getv(key="/text", default="")) }}{{ to_lower(value=getv(key="/text", default="")) }}
"#;

const CONF: &str = "[template]\nsrc = \"t.tera\"\ndest = \"/tmp/fuzz\"\nprefix = \"/fuzz\"\n";

fn resources() -> Vec<(Resource, &'static str)> {
    let shipped = [
        (
            include_str!("../../examples/nginx/conf.d/nap-apps.toml"),
            include_str!("../../examples/nginx/templates/nginx.conf.tera"),
            "/nap/apps/",
        ),
        (
            include_str!("../../examples/k8s-deploy/conf.d/demoproject-rollout.toml"),
            include_str!("../../examples/k8s-deploy/templates/rollout.tera"),
            "/k8s-deploy/demoproject/",
        ),
        (
            include_str!("../../examples/k8s-deploy/conf.d/demoproject-undo.toml"),
            include_str!("../../examples/k8s-deploy/templates/undo.tera"),
            "/k8s-deploy/demoproject/",
        ),
        (CONF, EVERY_FUNCTION, "/fuzz/"),
    ];
    shipped
        .into_iter()
        .map(|(conf, template, prefix)| {
            (Resource::from_texts("fuzz", conf, template).expect("shipped resources load"), prefix)
        })
        .collect()
}

libfuzzer_sys::fuzz_target!(|pairs: Vec<(&str, &str)>| {
    thread_local! {
        static RESOURCES: Vec<(Resource, &'static str)> = resources();
    }
    RESOURCES.with(|resources| {
        for (resource, prefix) in resources {
            let values: BTreeMap<String, String> =
                pairs.iter().map(|(key, value)| (format!("{prefix}{key}"), (*value).to_owned())).collect();
            // An error is fine (a value that is not JSON); a panic or a hang is not.
            let _ = resource.render(Arc::new(KeyValues::new(values, 1)));
        }
    });
});
