//! What nap knows of a Dockerfile before building it, read with the
//! `parse-dockerfile` crate: the ports it exposes, and every image its build
//! would use (each stage's `FROM`, `COPY --from`, `RUN --mount=from=`, and
//! the `ONBUILD` triggers a base brings), with `ARG` and `ENV` expanded as
//! Docker does ([`mod@expand`]). What the text alone decides is judged here: a
//! reference to another app's repository on nap's registry, an `ADD` of a
//! URL on nap's registry or on the host itself, a here-document, an
//! expansion nap cannot follow. Which app an image on the daemon belongs to
//! is `image/ownership.rs`.

mod expand;
mod reference;

use std::collections::HashMap;
use std::fmt;

use parse_dockerfile::{Flag, Instruction, Source};

pub use expand::Unsure;
use expand::{Value, expand, words};
pub(crate) use reference::ImageName;
use reference::{is_reference_text, is_url};

const BOM: &str = "\u{feff}";
/// The longest piece of a Dockerfile a refusal quotes.
const MAX_SHOWN: usize = 200;
/// The most instructions nap reads for one build, `ONBUILD` triggers run
/// again for each stage they start included: the check runs on the
/// gateway's threads, and stages `FROM` a stage of many triggers multiply.
const MAX_STEPS: usize = 100_000;

/// Earlier stages by name, lowercase.
type Names = HashMap<String, usize>;

/// Who builds, and where nap keeps the apps' images.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// The app being built.
    pub app: &'a str,
    /// nap's registry (`HOST:PORT`), whose `REGISTRY/APP` are app images.
    pub registry: Option<&'a str>,
}

/// Where a build would use an image: line, stage and instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub line: usize,
    /// 1 for the first stage.
    pub stage: usize,
    pub stage_name: Option<String>,
    /// The instruction as written, e.g. `COPY --from=$BASE`.
    pub instruction: String,
    /// What its image or URL expands to, when that differs.
    pub expanded: Option<String>,
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dockerfile line {}, stage {}", self.line, self.stage)?;
        if let Some(name) = &self.stage_name {
            write!(f, " ({})", shown(name))?;
        }
        write!(f, ": {}", shown(&self.instruction))?;
        match self.expanded.as_deref() {
            Some("") => write!(f, " (that is empty)")?,
            Some(expanded) => write!(f, " (that is {})", shown(expanded))?,
            None => {}
        }
        Ok(())
    }
}

/// An image a build would use, for the daemon's judgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    pub site: Site,
    /// The reference or ID, expanded.
    pub image: String,
}

/// What nap knows of a base image before the build runs on it.
#[derive(Debug, Default, Clone)]
pub struct Base {
    /// Its `Env` (`NAME=VALUE`), which a stage's expansions see.
    pub env: Vec<String>,
    /// Its `ONBUILD` triggers, which run at the start of the stage.
    pub triggers: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DockerfileError {
    #[error("the Dockerfile does not parse: {}", shown(&.0.to_string()))]
    Parse(#[source] parse_dockerfile::Error),
    #[error("{site} {refusal}")]
    Refused {
        site: Box<Site>,
        #[source]
        refusal: Refusal,
    },
}

impl DockerfileError {
    pub(crate) fn refused(site: Site, refusal: Refusal) -> DockerfileError {
        DockerfileError::Refused { site: Box::new(site), refusal }
    }
}

/// Why a build may not use what a Dockerfile names.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("is an image of app {owner}; build from a base image or from {app}'s own images")]
    OtherApp { owner: String, app: String },
    #[error("names the repository of app {owner}; build from a base image or from {app}'s own images")]
    OtherRepository { owner: String, app: String },
    #[error(
        "is image {id}, an untagged step of some build: nap cannot tell which app it belongs to; build from a \
         tagged base image"
    )]
    Untagged { id: String },
    #[error("is not an image reference Docker reads")]
    NotAReference,
    #[error("is no image Docker has, nor one it can pull")]
    Missing,
    #[error("cannot be checked: pulling it failed: {}", shown(.message))]
    Pull { message: String },
    #[error(
        "fetches a URL from the Docker daemon's own network, where this host's services and nap's registry \
         answer; fetch it in a RUN step instead (wget, curl)"
    )]
    Url,
    #[error(
        "uses a here-document, which nap's builder (Docker's classic builder) does not know: it would run its \
         lines as instructions"
    )]
    HereDoc,
    #[error("cannot be checked: an ONBUILD trigger of it does not parse: {}", shown(&format!("{:#}", .0)))]
    Trigger(#[source] parse_dockerfile::Error),
    #[error("cannot be checked: {0}")]
    Unsure(#[from] Unsure),
    #[error("cannot be checked: the build would run over {MAX_STEPS} instructions")]
    TooLarge,
}

/// A parsed Dockerfile.
pub struct Dockerfile<'t> {
    text: &'t str,
    parsed: parse_dockerfile::Dockerfile<'t>,
    escape: char,
    /// Where each line starts.
    lines: Vec<usize>,
}

/// Where a stage starts from.
enum Origin {
    Scratch,
    /// An earlier stage, by index.
    Stage(usize),
    Image(Use),
}

/// What a finished stage leaves to a stage built `FROM` it.
struct Finished<'d, 't> {
    env: HashMap<String, Value>,
    triggers: Vec<&'d Instruction<'t>>,
}

/// The variables an instruction of a stage sees.
struct Scope<'m> {
    /// `ENV`, the base's included: these win over `ARG`s.
    env: HashMap<String, Value>,
    args: HashMap<String, Value>,
    /// The global `ARG`s. One not declared again in the stage is, for
    /// BuildKit, not there; Docker's classic builder lets it through: so
    /// its value is not known.
    meta: &'m HashMap<String, Value>,
    /// Instructions read so far in the whole build.
    steps: usize,
}

impl Scope<'_> {
    fn lookup(&self, name: &str) -> Value {
        if let Some(value) = self.env.get(name).or_else(|| self.args.get(name)) {
            return value.clone();
        }
        if self.meta.contains_key(name) { Value::Unknown } else { Value::Unset }
    }
}

/// Where an instruction comes from, for its [`Site`].
#[derive(Clone, Copy)]
struct Place<'a> {
    stage: usize,
    stage_name: Option<&'a str>,
    /// The line of the `FROM` whose image brought the instruction as an
    /// `ONBUILD` trigger, and that image.
    trigger_of: Option<(usize, &'a str)>,
    /// An `ONBUILD` of an earlier stage, run in this one.
    onbuild: bool,
}

impl<'t> Dockerfile<'t> {
    pub fn parse(text: &'t str) -> Result<Self, DockerfileError> {
        let text = text.strip_prefix(BOM).unwrap_or(text);
        let parsed = parse_dockerfile::parse(text).map_err(DockerfileError::Parse)?;
        let escape = parsed.parser_directives.escape.as_ref().map_or('\\', |directive| directive.value.value);
        let lines = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Ok(Dockerfile { text, parsed, escape, lines })
    }

    /// The TCP ports it `EXPOSE`s, in order of appearance. Variables and
    /// ranges cannot be known before the build, so they are skipped.
    pub fn exposed_ports(&self) -> Vec<u16> {
        let mut ports = Vec::new();
        for instruction in &self.parsed.instructions {
            let Instruction::Expose(expose) = instruction else { continue };
            for word in &expose.arguments {
                let word = word.value.as_ref();
                let (port, proto) = word.split_once('/').unwrap_or((word, "tcp"));
                if proto.eq_ignore_ascii_case("tcp")
                    && let Ok(port) = port.parse::<u16>()
                    && !ports.contains(&port)
                {
                    ports.push(port);
                }
            }
        }
        ports
    }

    /// The images the stages start `FROM` (not stages, not `scratch`),
    /// each refused here when the text alone tells it is not allowed.
    pub fn bases(&self, rules: Rules<'_>) -> Result<Vec<Use>, DockerfileError> {
        let meta = self.meta();
        let mut bases = Vec::new();
        let mut names = Names::new();
        for (index, stage) in self.parsed.stages().enumerate() {
            if let Origin::Image(base) = self.origin(index, &stage, &names, &meta, rules)? {
                bases.push(base);
            }
            if let Some(name) = stage_name(&stage) {
                names.insert(name, index);
            }
        }
        Ok(bases)
    }

    /// Every other image the build would use: `COPY --from` and `RUN
    /// --mount=from=` of images in every stage, and in the `ONBUILD`
    /// triggers of its bases (`base` tells what nap learnt of each image in
    /// [`Dockerfile::bases`]). `ADD` of a URL that must not be fetched, a
    /// here-document, and an image named by an expansion nap cannot follow
    /// are refused here.
    pub fn uses(&self, rules: Rules<'_>, base: &dyn Fn(&str) -> Option<Base>) -> Result<Vec<Use>, DockerfileError> {
        let meta = self.meta();
        let mut uses = Vec::new();
        let mut finished: Vec<Finished<'_, 't>> = Vec::new();
        let (mut names, mut steps) = (Names::new(), 0);
        for (index, stage) in self.parsed.stages().enumerate() {
            let name = stage_name(&stage);
            let place = Place { stage: index + 1, stage_name: name.as_deref(), trigger_of: None, onbuild: false };
            let mut scope = Scope { env: HashMap::new(), args: HashMap::new(), meta: &meta, steps };
            let too_large = || DockerfileError::refused(self.site_of_from(index, &stage), Refusal::TooLarge);
            let mut triggers = Vec::new();
            match self.origin(index, &stage, &names, &meta, rules)? {
                Origin::Scratch => {}
                Origin::Stage(earlier) => {
                    let earlier = &finished[earlier];
                    scope.env.clone_from(&earlier.env);
                    let place = Place { onbuild: true, ..place };
                    for trigger in &earlier.triggers {
                        self.instruction(trigger, &mut scope, self.escape, place, rules, &mut uses, &names)?;
                    }
                    scope.steps += earlier.triggers.len();
                }
                Origin::Image(image) => {
                    let base = base(&image.image).unwrap_or_default();
                    for pair in &base.env {
                        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                        scope.env.insert(name.to_owned(), Value::Set(value.to_owned()));
                    }
                    let line = image.site.line;
                    let place = Place { trigger_of: Some((line, &image.image)), ..place };
                    for trigger in &base.triggers {
                        let text = format!("FROM scratch\n{trigger}\n");
                        let refuse = |refusal| DockerfileError::refused(image.site.clone(), refusal);
                        let parsed = parse_dockerfile::parse(&text).map_err(|err| refuse(Refusal::Trigger(err)))?;
                        for instruction in parsed.instructions.iter().skip(1) {
                            self.instruction(instruction, &mut scope, '\\', place, rules, &mut uses, &names)?;
                        }
                    }
                    scope.steps += base.triggers.len();
                }
            }
            if scope.steps > MAX_STEPS {
                return Err(too_large());
            }
            for instruction in stage.instructions {
                if let Instruction::Onbuild(onbuild) = instruction {
                    triggers.push(&*onbuild.instruction);
                } else {
                    self.instruction(instruction, &mut scope, self.escape, place, rules, &mut uses, &names)?;
                }
            }
            steps = scope.steps + stage.instructions.len();
            if steps > MAX_STEPS {
                return Err(too_large());
            }
            if let Some(name) = &name {
                names.insert(name.clone(), index);
            }
            finished.push(Finished { env: scope.env, triggers });
        }
        Ok(uses)
    }

    /// The global `ARG`s, each default expanded with those before it.
    fn meta(&self) -> HashMap<String, Value> {
        let mut meta = HashMap::new();
        for arg in self.parsed.global_args() {
            for word in words(&arg.arguments.value, self.escape) {
                let (name, value) = match word.split_once('=') {
                    Some((name, raw)) => {
                        let lookup = |name: &str| meta.get(name).cloned().unwrap_or(Value::Unset);
                        (name, expand(raw, self.escape, &lookup).map_or(Value::Unknown, Value::Set))
                    }
                    None => (word, Value::Unset),
                };
                meta.insert(name.to_owned(), value);
            }
        }
        meta
    }

    /// Where stage `index` starts: its `FROM` expanded with the global
    /// `ARG`s (`names`: the stages before it).
    fn origin(
        &self,
        index: usize,
        stage: &parse_dockerfile::Stage<'t, '_>,
        names: &Names,
        meta: &HashMap<String, Value>,
        rules: Rules<'_>,
    ) -> Result<Origin, DockerfileError> {
        let raw = stage.from.image.value.as_ref();
        let mut site = self.site_of_from(index, stage);
        let lookup = |name: &str| meta.get(name).cloned().unwrap_or(Value::Unset);
        let image = match expand(raw, self.escape, &lookup) {
            Ok(image) => image,
            Err(unsure) => return Err(DockerfileError::refused(site, unsure.into())),
        };
        if image == "scratch" {
            return Ok(Origin::Scratch);
        }
        // A stage's name, not an index, in FROM; as Docker, in any case.
        let lower = image.to_ascii_lowercase();
        if let Some(&earlier) = names.get(&lower) {
            return Ok(Origin::Stage(earlier));
        }
        site.expanded = (image != raw).then(|| image.clone());
        judge_name(Use { site, image }, rules).map(Origin::Image)
    }

    /// The site of stage `index`'s `FROM`.
    fn site_of_from(&self, index: usize, stage: &parse_dockerfile::Stage<'t, '_>) -> Site {
        Site {
            line: self.line(stage.from.from.span.start),
            stage: index + 1,
            stage_name: stage_name(stage),
            instruction: format!("FROM {}", stage.from.image.value),
            expanded: None,
        }
    }

    /// Collects the images one instruction uses (`COPY --from`, `RUN
    /// --mount=from=`), and refuses what it may not do.
    #[expect(clippy::too_many_arguments, reason = "the walk's state, passed down one level")]
    fn instruction(
        &self,
        instruction: &Instruction<'_>,
        scope: &mut Scope<'_>,
        escape: char,
        place: Place<'_>,
        rules: Rules<'_>,
        uses: &mut Vec<Use>,
        names: &Names,
    ) -> Result<(), DockerfileError> {
        let site = |offset: usize, instruction: String| {
            let (line, instruction) = match place.trigger_of {
                Some((line, image)) => (line, format!("ONBUILD {instruction} (a trigger of {image})")),
                None if place.onbuild => (self.line(offset), format!("ONBUILD {instruction}")),
                None => (self.line(offset), instruction),
            };
            Site {
                line,
                stage: place.stage,
                stage_name: place.stage_name.map(str::to_owned),
                instruction,
                expanded: None,
            }
        };
        let refused = |site: Site, refusal: Refusal| Err(DockerfileError::refused(site, refusal));
        match instruction {
            Instruction::Arg(arg) => {
                for word in words(&arg.arguments.value, escape) {
                    let value = match word.split_once('=') {
                        Some((_, raw)) => {
                            expand(raw, escape, &|name| scope.lookup(name)).map_or(Value::Unknown, Value::Set)
                        }
                        None => scope.meta.get(word).cloned().unwrap_or(Value::Unset),
                    };
                    let name = word.split_once('=').map_or(word, |(name, _)| name);
                    scope.args.insert(name.to_owned(), value);
                }
            }
            Instruction::Env(env) => {
                let text = env.arguments.value.as_ref();
                let words = words(text, escape);
                let pairs: Vec<(&str, &str)> = match words.first() {
                    // The old form: `ENV NAME the rest of the line`.
                    Some(first) if !first.contains('=') => {
                        vec![(*first, text.trim_start()[first.len()..].trim())]
                    }
                    _ => words.iter().filter_map(|word| word.split_once('=')).collect(),
                };
                // Every value sees the variables from before the instruction.
                let values: Vec<(String, Value)> = pairs
                    .into_iter()
                    .map(|(name, raw)| {
                        let value = expand(raw, escape, &|name| scope.lookup(name)).map_or(Value::Unknown, Value::Set);
                        (name.to_owned(), value)
                    })
                    .collect();
                scope.env.extend(values);
            }
            Instruction::Copy(copy) => {
                if copy.src.iter().any(|source| matches!(source, Source::HereDoc(_))) {
                    return refused(site(copy.copy.span.start, "COPY <<".to_owned()), Refusal::HereDoc);
                }
                let at = |raw: &str| site(copy.copy.span.start, format!("COPY --from={raw}"));
                from_flags(&copy.options, scope, escape, names, place.stage, &at, rules, uses)?;
            }
            Instruction::Add(add) => {
                let at = |raw: &str| site(add.add.span.start, format!("ADD --from={raw}"));
                from_flags(&add.options, scope, escape, names, place.stage, &at, rules, uses)?;
                for source in &add.src {
                    let raw = match source {
                        Source::Path(path) => path.value.as_ref(),
                        Source::HereDoc(_) => {
                            return refused(site(add.add.span.start, "ADD <<".to_owned()), Refusal::HereDoc);
                        }
                        _ => continue,
                    };
                    judge_source(raw, site(add.add.span.start, format!("ADD {raw}")), scope, escape)?;
                }
            }
            Instruction::Run(run) => {
                if !run.here_docs.is_empty() {
                    return refused(site(run.run.span.start, "RUN <<".to_owned()), Refusal::HereDoc);
                }
                for flag in &run.options {
                    let Some(value) = flag.value.as_ref().filter(|_| flag.name.value.eq_ignore_ascii_case("mount"))
                    else {
                        continue;
                    };
                    let value = value.value.as_ref();
                    let at = site(run.run.span.start, format!("RUN --mount={value}"));
                    if value.contains(['"', '\'']) {
                        if value.to_ascii_lowercase().contains("from") {
                            return refused(at, Unsure::Quoting.into());
                        }
                        continue;
                    }
                    for field in value.split(',') {
                        let Some((key, raw)) = field.split_once('=') else { continue };
                        if key.trim().eq_ignore_ascii_case("from") {
                            image_or_stage(raw, at.clone(), scope, escape, names, place.stage, rules, uses)?;
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The line (from 1) of a byte offset.
    fn line(&self, offset: usize) -> usize {
        debug_assert!(offset <= self.text.len());
        self.lines.partition_point(|&start| start <= offset)
    }
}

/// The `--from=` flags of a `COPY` (or `ADD`).
#[expect(clippy::too_many_arguments, reason = "the walk's state, passed down one level")]
fn from_flags(
    flags: &[Flag<'_>],
    scope: &Scope<'_>,
    escape: char,
    names: &Names,
    stage: usize,
    site: &dyn Fn(&str) -> Site,
    rules: Rules<'_>,
    uses: &mut Vec<Use>,
) -> Result<(), DockerfileError> {
    for flag in flags {
        if let Some(value) = flag.value.as_ref().filter(|_| flag.name.value.eq_ignore_ascii_case("from")) {
            let raw = value.value.as_ref();
            image_or_stage(raw, site(raw), scope, escape, names, stage, rules, uses)?;
        }
    }
    Ok(())
}

/// A `--from` value: an earlier stage (by name or index), or an image.
#[expect(clippy::too_many_arguments, reason = "the walk's state, passed down one level")]
fn image_or_stage(
    raw: &str,
    mut site: Site,
    scope: &Scope<'_>,
    escape: char,
    names: &Names,
    stage: usize,
    rules: Rules<'_>,
    uses: &mut Vec<Use>,
) -> Result<(), DockerfileError> {
    let image = match expand(raw, escape, &|name| scope.lookup(name)) {
        Ok(image) => image,
        Err(unsure) => return Err(DockerfileError::refused(site, unsure.into())),
    };
    let lower = image.to_ascii_lowercase();
    let earlier_name = names.contains_key(&lower);
    let earlier_index = image.parse::<usize>().is_ok_and(|index| index + 1 < stage);
    if earlier_name || earlier_index {
        return Ok(());
    }
    site.expanded = (image != raw).then(|| image.clone());
    uses.push(judge_name(Use { site, image }, rules)?);
    Ok(())
}

/// Refuses an `ADD` source that is a URL: the daemon would fetch it.
fn judge_source(raw: &str, mut site: Site, scope: &Scope<'_>, escape: char) -> Result<(), DockerfileError> {
    let source = match expand(raw, escape, &|name| scope.lookup(name)) {
        Ok(source) => source,
        Err(unsure) => return Err(DockerfileError::refused(site, unsure.into())),
    };
    site.expanded = (source != raw).then(|| source.clone());
    if is_url(&source) { Err(DockerfileError::refused(site, Refusal::Url)) } else { Ok(()) }
}

/// A stage's name (`FROM … AS NAME`), as Docker compares it.
fn stage_name(stage: &parse_dockerfile::Stage<'_, '_>) -> Option<String> {
    stage.from.as_.as_ref().map(|(_, name)| name.value.to_ascii_lowercase())
}

/// Refuses an image that names another app's repository on nap's registry,
/// or that is no reference at all; else answers it for the daemon.
fn judge_name(used: Use, rules: Rules<'_>) -> Result<Use, DockerfileError> {
    if !is_reference_text(&used.image) {
        return Err(DockerfileError::refused(used.site, Refusal::NotAReference));
    }
    let owner = rules.registry.and_then(|registry| ImageName::parse(&used.image)?.app_on(registry).map(str::to_owned));
    match owner {
        Some(owner) if owner != rules.app => {
            Err(DockerfileError::refused(used.site, Refusal::OtherRepository { owner, app: rules.app.to_owned() }))
        }
        _ => Ok(used),
    }
}

/// `text` fit for one line of a refusal: control characters escaped, and
/// cut short when long.
fn shown(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if out.len() >= MAX_SHOWN {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests;
