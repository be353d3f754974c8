fn main() {
    // Migrations are embedded by `sqlx::migrate!`: a new or changed one must
    // rebuild the crate.
    println!("cargo:rerun-if-changed=migrations");
}
