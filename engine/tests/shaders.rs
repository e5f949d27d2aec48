//! Every WGSL file in `shaders/` parses and validates with naga, and every one is known to the
//! engine (so a new shader cannot slip past this test).
use a2cid_engine::kernels::Shader;

fn validate(name: &str, src: &str) {
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{name} does not parse:\n{}", e.emit_to_string(src)));
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{name} does not validate:\n{}", e.emit_to_string(src)));
}

#[test]
fn every_engine_shader_parses_and_validates() {
    for shader in Shader::ALL {
        validate(shader.file_name(), shader.source());
    }
}

#[test]
fn every_wgsl_file_is_an_engine_shader() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shaders");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("shaders/ exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wgsl"))
        .collect();
    on_disk.sort();
    let mut known: Vec<String> = Shader::ALL
        .iter()
        .map(|s| s.file_name().to_string())
        .collect();
    known.sort();
    assert_eq!(on_disk, known, "shaders/ and kernels::Shader::ALL disagree");
    for name in &on_disk {
        validate(name, &std::fs::read_to_string(dir.join(name)).unwrap());
    }
}

#[test]
fn a_broken_shader_is_caught() {
    // The validator must actually reject things: a type error that parses.
    let bad = "@compute @workgroup_size(1) fn main() { let x: f32 = 1u; }";
    assert!(
        naga::front::wgsl::parse_str(bad).is_err()
            || naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::all()
            )
            .validate(&naga::front::wgsl::parse_str(bad).unwrap())
            .is_err()
    );
}
