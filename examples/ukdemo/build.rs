fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    println!("cargo:rustc-link-arg-bins=-T{dir}/link.ld");
    println!("cargo:rustc-link-arg-bins=--no-pie");
    // A GNU build-id, kept in a loaded section (link.ld), names the image in
    // every core it sends.
    println!("cargo:rustc-link-arg-bins=--build-id=sha1");
    println!("cargo:rerun-if-changed=link.ld");
}
