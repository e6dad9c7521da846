fn main() {
    for (_, crd) in asterisk_operator::crd::all() {
        println!("---\n{}", serde_saphyr::to_string(&crd).unwrap());
    }
}
