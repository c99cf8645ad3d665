fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=goroscope");
    tonic_prost_build::configure().compile_protos(
        &["goroscope/v1/ingest.proto", "goroscope/v1/query.proto"],
        &["."],
    )?;
    Ok(())
}
