//! The WGSL and what the Rust side assumes about it, held together with naga (no device needed):
//! - every file in `shaders/` parses and validates (the prelude alone, every other file behind the
//!   prelude, as the engine compiles it), and every file but the prelude is a registered family;
//! - for every registered entry point, each binding it declares exists in the WGSL under that name
//!   at that group/binding with that address space and access, and it uses no other binding (wgpu
//!   derives the pipeline layout from exactly what an entry point uses);
//! - each family's Rust uniform struct has the WGSL struct's size and, field by field, its names,
//!   offsets and types;
//! - the overridable constants the host sets and the constants its grid arithmetic shares with
//!   the WGSL exist, with the values the host assumes.
//!
//! The checks return every problem as a line naming the kernel, so the synthetic tests at the end
//! show that a wrong padding, binding or access is caught, not just that correct code passes.
use a2cid_engine::device::KernelSource;
use a2cid_engine::kernels::{
    Binding, BindingKind, EntryPoint, Family, UniformField, UniformLayout, FAMILIES, PRELUDE,
    PRELUDE_CONSTANTS,
};
use naga::{AddressSpace, StorageAccess, TypeInner};

fn parse(name: &str, src: &str) -> Result<(naga::Module, naga::valid::ModuleInfo), String> {
    let module = naga::front::wgsl::parse_str(src)
        .map_err(|e| format!("{name} does not parse:\n{}", e.emit_to_string(src)))?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| format!("{name} does not validate:\n{}", e.emit_to_string(src)))?;
    Ok((module, info))
}

/// Every way `family` disagrees with its WGSL, one line each; empty when they agree.
fn family_problems(family: &Family) -> Vec<String> {
    let file = family.source.name;
    let (module, info) = match parse(file, family.source.wgsl) {
        Ok(parsed) => parsed,
        Err(e) => return vec![e],
    };
    let mut problems = Vec::new();
    for name in family.overrides {
        if !module
            .overrides
            .iter()
            .any(|(_, o)| o.name.as_deref() == Some(name))
        {
            problems.push(format!("{file}: no overridable constant `{name}`"));
        }
    }
    problems.extend(constant_problems(file, &module, family.shared_constants));
    for ep in &module.entry_points {
        if family.entry_point(&ep.name).is_none() {
            problems.push(format!(
                "{file}: entry point `{}` is not declared by the family",
                ep.name
            ));
        }
    }
    let mut uniform_globals = Vec::new();
    for entry in family.entry_points {
        let kernel = format!("{} ({file})", entry.name);
        let Some(index) = module
            .entry_points
            .iter()
            .position(|e| e.name == entry.name)
        else {
            problems.push(format!("{kernel}: no such entry point in the WGSL"));
            continue;
        };
        if module.entry_points[index].stage != naga::ShaderStage::Compute {
            problems.push(format!("{kernel}: not a compute entry point"));
        }
        problems.extend(binding_problems(
            &kernel,
            entry,
            &module,
            info.get_entry_point(index),
        ));
        for b in entry.bindings {
            if b.kind == BindingKind::Uniform && !uniform_globals.contains(&b.name) {
                uniform_globals.push(b.name);
            }
        }
    }
    // One uniform block per family: the struct behind it is what `family.uniform` mirrors.
    match uniform_globals[..] {
        [name] => {
            let global = module
                .global_variables
                .iter()
                .find(|(_, g)| g.name.as_deref() == Some(name));
            if let Some((_, g)) = global {
                problems.extend(uniform_problems(file, &family.uniform, &module, g.ty));
            }
        }
        _ => problems.push(format!(
            "{file}: the entry points declare the uniform bindings {uniform_globals:?}; a family \
             has exactly one"
        )),
    }
    problems
}

/// The declared bindings of `entry` against the globals the WGSL entry point uses.
fn binding_problems(
    kernel: &str,
    entry: &EntryPoint,
    module: &naga::Module,
    uses: &naga::valid::FunctionInfo,
) -> Vec<String> {
    let mut problems = Vec::new();
    let uniforms = entry
        .bindings
        .iter()
        .filter(|b| b.kind == BindingKind::Uniform)
        .count();
    if uniforms != 1 {
        problems.push(format!(
            "{kernel}: declares {uniforms} uniform bindings; an entry point has one"
        ));
    }
    for pair in entry.bindings.windows(2) {
        if pair[0].binding >= pair[1].binding {
            problems.push(format!(
                "{kernel}: bindings `{}` and `{}` are not in increasing binding order",
                pair[0].name, pair[1].name
            ));
        }
    }
    for b in entry.bindings {
        let global = module
            .global_variables
            .iter()
            .find(|(_, g)| g.name.as_deref() == Some(b.name));
        let Some((handle, g)) = global else {
            problems.push(format!("{kernel}: the WGSL has no global `{}`", b.name));
            continue;
        };
        match &g.binding {
            Some(rb) if rb.group == 0 && rb.binding == b.binding => {}
            Some(rb) => problems.push(format!(
                "{kernel}: `{}` is @group({}) @binding({}) in the WGSL, declared as @group(0) \
                 @binding({})",
                b.name, rb.group, rb.binding, b.binding
            )),
            None => problems.push(format!("{kernel}: `{}` is not a resource", b.name)),
        }
        let wgsl_kind = kind_of(g.space);
        if wgsl_kind != Some(b.kind) {
            problems.push(format!(
                "{kernel}: `{}` is var<{}> in the WGSL, declared as var<{}>",
                b.name,
                wgsl_kind.map_or_else(|| format!("{:?}", g.space), |k| k.to_string()),
                b.kind
            ));
        }
        if uses[handle].is_empty() {
            problems.push(format!(
                "{kernel}: declares `{}`, which the entry point never uses (wgpu leaves it out \
                 of the layout)",
                b.name
            ));
        }
    }
    for (handle, g) in module.global_variables.iter() {
        let Some(rb) = &g.binding else { continue };
        let name = g.name.as_deref().unwrap_or("<unnamed>");
        if !uses[handle].is_empty() && !entry.bindings.iter().any(|b| b.name == name) {
            problems.push(format!(
                "{kernel}: uses `{name}` (@group({}) @binding({})), which it does not declare",
                rb.group, rb.binding
            ));
        }
    }
    problems
}

fn kind_of(space: AddressSpace) -> Option<BindingKind> {
    match space {
        AddressSpace::Uniform => Some(BindingKind::Uniform),
        AddressSpace::Storage { access } if access == StorageAccess::LOAD => {
            Some(BindingKind::StorageRead)
        }
        AddressSpace::Storage { access }
            if access == StorageAccess::LOAD | StorageAccess::STORE =>
        {
            Some(BindingKind::StorageReadWrite)
        }
        _ => None,
    }
}

/// The Rust uniform struct against the WGSL struct `ty`, as naga lays it out: member for member,
/// except that Rust may spell out as `_`-named fields the padding WGSL leaves implicit (a `Pod`
/// struct cannot have implicit padding).
fn uniform_problems(
    file: &str,
    rust: &UniformLayout,
    module: &naga::Module,
    ty: naga::Handle<naga::Type>,
) -> Vec<String> {
    let what = format!("{file}: uniform {}", rust.rust_name);
    let TypeInner::Struct { members, span } = &module.types[ty].inner else {
        return vec![format!("{what}: the WGSL uniform is not a struct")];
    };
    let fields: Vec<&UniformField> = rust
        .fields
        .iter()
        .filter(|f| {
            !f.name.starts_with('_') || members.iter().any(|m| m.name.as_deref() == Some(f.name))
        })
        .collect();
    let mut problems = Vec::new();
    for i in 0..fields.len().max(members.len()) {
        match (fields.get(i), members.get(i)) {
            (Some(f), Some(m)) => {
                let wgsl_name = m.name.as_deref().unwrap_or("<unnamed>");
                let wgsl_type = rust_spelling(module, m.ty);
                if f.name != wgsl_name {
                    problems.push(format!(
                        "{what}: field {i} is `{}` in Rust, `{wgsl_name}` in the WGSL",
                        f.name
                    ));
                } else if f.offset != m.offset as usize {
                    problems.push(format!(
                        "{what}: field `{}`: Rust offset {}, WGSL offset {}",
                        f.name, f.offset, m.offset
                    ));
                } else if f.rust_type != wgsl_type {
                    problems.push(format!(
                        "{what}: field `{}` is {} in Rust, {wgsl_type} in the WGSL",
                        f.name, f.rust_type
                    ));
                }
            }
            (Some(f), None) => problems.push(format!(
                "{what}: field `{}` (Rust offset {}) is not in the WGSL struct",
                f.name, f.offset
            )),
            (None, Some(m)) => problems.push(format!(
                "{what}: WGSL member `{}` (offset {}) is not in the Rust struct",
                m.name.as_deref().unwrap_or("<unnamed>"),
                m.offset
            )),
            (None, None) => unreachable!(),
        }
    }
    if rust.size != *span as usize {
        problems.push(format!(
            "{what}: {} bytes in Rust, {span} bytes in the WGSL",
            rust.size
        ));
    }
    problems
}

/// How a WGSL type is spelled in the Rust mirror (`u32`, `[f32; 2]` for `vec2<f32>`).
fn rust_spelling(module: &naga::Module, ty: naga::Handle<naga::Type>) -> String {
    let scalar = |s: naga::Scalar| match (s.kind, s.width) {
        (naga::ScalarKind::Uint, 4) => "u32".to_string(),
        (naga::ScalarKind::Sint, 4) => "i32".to_string(),
        (naga::ScalarKind::Float, 4) => "f32".to_string(),
        _ => format!("{s:?}"),
    };
    match &module.types[ty].inner {
        TypeInner::Scalar(s) => scalar(*s),
        TypeInner::Vector { size, scalar: s } => format!("[{}; {}]", scalar(*s), *size as u8),
        TypeInner::Array {
            base,
            size: naga::ArraySize::Constant(n),
            ..
        } => format!("[{}; {n}]", rust_spelling(module, *base)),
        other => format!("{other:?}"),
    }
}

/// Named `u32` constants of `module` against the values the host assumes.
fn constant_problems(file: &str, module: &naga::Module, expected: &[(&str, u32)]) -> Vec<String> {
    let mut problems = Vec::new();
    for &(name, want) in expected {
        let found = module
            .constants
            .iter()
            .find(|(_, c)| c.name.as_deref() == Some(name));
        match found.map(|(_, c)| &module.global_expressions[c.init]) {
            Some(naga::Expression::Literal(naga::Literal::U32(v))) if *v == want => {}
            Some(e) => problems.push(format!(
                "{file}: constant `{name}` is {e:?} in the WGSL, {want}u on the host"
            )),
            None => problems.push(format!(
                "{file}: no constant `{name}` (the host assumes {want}u)"
            )),
        }
    }
    problems
}

fn shaders_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shaders")
}

#[test]
fn every_family_matches_its_wgsl() {
    let problems: Vec<String> = FAMILIES.iter().flat_map(|f| family_problems(f)).collect();
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_prelude_validates_alone_and_its_shared_constants_match_the_host() {
    let (module, _) = parse("prelude.wgsl", PRELUDE).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        module.entry_points.is_empty(),
        "the prelude has entry points"
    );
    assert!(
        module.global_variables.is_empty(),
        "the prelude declares globals: they would be bound in every family"
    );
    let problems = constant_problems("prelude.wgsl", &module, PRELUDE_CONSTANTS);
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn every_wgsl_file_validates_and_is_a_registered_family() {
    let dir = shaders_dir();
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".wgsl") && n != "prelude.wgsl")
        .collect();
    on_disk.sort();
    let mut registered: Vec<String> = FAMILIES.iter().map(|f| f.source.name.to_string()).collect();
    registered.sort();
    assert_eq!(
        on_disk, registered,
        "shaders/ and kernels::FAMILIES disagree"
    );
    for family in FAMILIES {
        let file = std::fs::read_to_string(dir.join(family.source.name)).expect("read shader");
        // What the engine compiles is the prelude, then the file on disk.
        assert_eq!(
            family.source.wgsl,
            format!("{PRELUDE}{file}"),
            "{}: the compiled source is not prelude + file",
            family.source.name
        );
        parse(family.source.name, family.source.wgsl).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn family_and_entry_point_names_are_unique() {
    // The pipeline cache is keyed by (source name, entry point).
    let mut names: Vec<&str> = FAMILIES.iter().map(|f| f.source.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(
        names.len(),
        FAMILIES.len(),
        "two families share a file name"
    );
    for f in FAMILIES {
        let mut entries: Vec<&str> = f.entry_points.iter().map(|e| e.name).collect();
        entries.sort();
        entries.dedup();
        assert_eq!(entries.len(), f.entry_points.len(), "{}", f.source.name);
    }
}

#[test]
fn a_broken_shader_is_caught() {
    // The validator must actually reject things: a type error that parses.
    let bad = "@compute @workgroup_size(1) fn main() { let x: f32 = 1u; }";
    assert!(parse("bad.wgsl", bad).is_err());
}

// ---------------------------------------------------------------------------------------------
// The checks catch what they are for: a synthetic family, right and then wrong.

const SYNTHETIC_WGSL: &str = "
struct Params {
    n: u32,
    scale: vec2<f32>,
}
override DOUBLE: bool = false;
const ROWS: u32 = 8u;
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@compute @workgroup_size(64)
fn scale(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x < p.n * ROWS) {
        dst[gid.x] = p.scale.x * src[gid.x];
        if (DOUBLE) { dst[gid.x] *= 2.0; }
    }
}
";

/// WGSL pads `scale` (a vec2, 8-byte aligned) to offset 8; a naive `#[repr(C)]` mirror puts it at 4.
#[repr(C)]
#[allow(dead_code)]
struct NaiveParams {
    n: u32,
    scale: [f32; 2],
}

#[repr(C)]
#[allow(dead_code)]
struct PaddedParams {
    n: u32,
    _pad: u32,
    scale: [f32; 2],
}

const NAIVE: UniformLayout = UniformLayout {
    rust_name: "NaiveParams",
    size: std::mem::size_of::<NaiveParams>(),
    fields: &[
        UniformField {
            name: "n",
            offset: std::mem::offset_of!(NaiveParams, n),
            rust_type: "u32",
        },
        UniformField {
            name: "scale",
            offset: std::mem::offset_of!(NaiveParams, scale),
            rust_type: "[f32; 2]",
        },
    ],
};

const SCALE: EntryPoint = EntryPoint {
    name: "scale",
    bindings: &[
        Binding::uniform(0, "p"),
        Binding::read(1, "src"),
        Binding::read_write(2, "dst"),
    ],
};

const SYNTHETIC: Family = Family {
    source: KernelSource {
        name: "synthetic.wgsl",
        wgsl: SYNTHETIC_WGSL,
    },
    uniform: NAIVE,
    overrides: &["DOUBLE"],
    shared_constants: &[("ROWS", 8)],
    entry_points: &[SCALE],
};

const PADDED: UniformLayout = UniformLayout {
    rust_name: "PaddedParams",
    size: std::mem::size_of::<PaddedParams>(),
    fields: &[
        UniformField {
            name: "n",
            offset: std::mem::offset_of!(PaddedParams, n),
            rust_type: "u32",
        },
        UniformField {
            name: "_pad",
            offset: std::mem::offset_of!(PaddedParams, _pad),
            rust_type: "u32",
        },
        UniformField {
            name: "scale",
            offset: std::mem::offset_of!(PaddedParams, scale),
            rust_type: "[f32; 2]",
        },
    ],
};

#[test]
fn a_uniform_with_the_wrong_padding_fails_naming_field_and_offsets() {
    assert_eq!(
        family_problems(&SYNTHETIC),
        [
            "synthetic.wgsl: uniform NaiveParams: field `scale`: Rust offset 4, WGSL offset 8",
            "synthetic.wgsl: uniform NaiveParams: 12 bytes in Rust, 16 bytes in the WGSL",
        ]
    );
}

#[test]
fn the_same_family_with_the_padding_spelled_out_in_rust_passes() {
    // The control: the failures above come from the padding alone.
    let padded = Family {
        uniform: PADDED,
        ..SYNTHETIC
    };
    assert_eq!(family_problems(&padded), Vec::<String>::new());
}

#[test]
fn wrong_bindings_types_and_constants_are_each_reported() {
    const WRONG: Family = Family {
        uniform: UniformLayout {
            fields: &[
                UniformField {
                    name: "n",
                    offset: 0,
                    rust_type: "f32", // the WGSL says u32
                },
                PADDED.fields[1],
                PADDED.fields[2],
            ],
            ..PADDED
        },
        overrides: &["TRIPLE"],
        shared_constants: &[("ROWS", 16), ("COLS", 1)],
        entry_points: &[EntryPoint {
            name: "scale",
            bindings: &[
                Binding::uniform(0, "p"),
                Binding::read_write(1, "src"), // the WGSL says read
                Binding::read_write(3, "dst"), // the WGSL says binding 2
                Binding::read(4, "bias"),      // not in the WGSL
            ],
        }],
        ..SYNTHETIC
    };
    let problems = family_problems(&WRONG);
    let expected = [
        "synthetic.wgsl: no overridable constant `TRIPLE`",
        "synthetic.wgsl: constant `ROWS` is Literal(U32(8)) in the WGSL, 16u on the host",
        "synthetic.wgsl: no constant `COLS` (the host assumes 1u)",
        "scale (synthetic.wgsl): `src` is var<storage, read> in the WGSL, declared as \
         var<storage, read_write>",
        "scale (synthetic.wgsl): `dst` is @group(0) @binding(2) in the WGSL, declared as \
         @group(0) @binding(3)",
        "scale (synthetic.wgsl): the WGSL has no global `bias`",
        "synthetic.wgsl: uniform PaddedParams: field `n` is f32 in Rust, u32 in the WGSL",
    ];
    assert_eq!(problems, expected);
}

#[test]
fn an_entry_point_that_uses_an_undeclared_binding_or_declares_an_unused_one_is_reported() {
    const ENTRY_POINTS: &[EntryPoint] = &[
        EntryPoint {
            name: "scale",
            bindings: &[Binding::uniform(0, "p"), Binding::read_write(2, "dst")],
        },
        EntryPoint {
            name: "clear",
            bindings: &[
                Binding::uniform(0, "p"),
                Binding::read(1, "src"),
                Binding::read_write(2, "dst"),
            ],
        },
    ];
    // `clear` writes dst only; SYNTHETIC_WGSL's `scale` reads src too.
    let wgsl = format!(
        "{SYNTHETIC_WGSL}
@compute @workgroup_size(64)
fn clear(@builtin(global_invocation_id) gid: vec3<u32>) {{
    if (gid.x < p.n) {{ dst[gid.x] = 0.0; }}
}}"
    );
    let family = Family {
        source: KernelSource {
            name: "synthetic.wgsl",
            wgsl: Box::leak(wgsl.into_boxed_str()),
        },
        uniform: PADDED,
        entry_points: ENTRY_POINTS,
        ..SYNTHETIC
    };
    assert_eq!(
        family_problems(&family),
        [
            "scale (synthetic.wgsl): uses `src` (@group(0) @binding(1)), which it does not \
             declare",
            "clear (synthetic.wgsl): declares `src`, which the entry point never uses (wgpu \
             leaves it out of the layout)",
        ]
    );
}
