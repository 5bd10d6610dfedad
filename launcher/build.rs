//! Compiles the seccomp policy (`src/seccomp/policy.txt`) with libseccomp at
//! build time, like firecracker's seccompiler: a launch then only calls
//! seccomp(2) with ready BPF instead of spending milliseconds in libseccomp.
//! The tests compile the policy again at run time and compare.

#[path = "src/seccomp/policy.rs"]
#[allow(dead_code)]
mod policy;

use std::fmt::Write as _;

fn main() {
    // `porthole`: relative relocations packed as DT_RELR (glibc 2.36,
    // binutils 2.38): the dynamic loader walks a few hundred bytes instead
    // of ~70 KiB of Elf64_Rela records on every launch, and those pages are
    // neither read nor resident.
    // Not in a static build (crt-static): glibc's static start-up code does
    // not apply DT_RELR, and the binary would crash before main.
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    if !features.split(',').any(|f| f == "crt-static") {
        println!("cargo:rustc-link-arg-bin=porthole=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=src/seccomp/policy.txt");
    println!("cargo:rerun-if-changed=src/seccomp/policy.rs");
    let text = std::fs::read_to_string("src/seccomp/policy.txt").expect("read policy.txt");
    let policy = policy::Policy::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    // One set of programs per feature combination, indexed by
    // Features::index.
    let mut table = String::from("[\n");
    let mut unknown_all = Vec::new();
    for (v, features) in policy::Features::ALL.iter().enumerate() {
        assert_eq!(features.index(), v);
        let (programs, unknown) =
            policy::compile(&policy, *features).unwrap_or_else(|e| panic!("{e}"));
        unknown_all.extend(unknown);
        table.push_str("    &[\n");
        for (i, p) in programs.iter().enumerate() {
            let file = out.join(format!("seccomp_{v}_{i}.bpf"));
            std::fs::write(&file, &p.bytes).expect("write bpf");
            writeln!(
                table,
                "        ({:?}, include_bytes!({:?})),",
                p.name,
                file.display().to_string()
            )
            .expect("fmt");
        }
        table.push_str("    ],\n");
    }
    table.push_str("]\n");
    unknown_all.sort();
    unknown_all.dedup();
    for name in unknown_all {
        println!(
            "cargo:warning=seccomp policy: libseccomp does not know syscall {name}; left to the default"
        );
    }
    std::fs::write(out.join("seccomp_programs.rs"), table).expect("write table");
}
