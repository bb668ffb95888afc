//! `ftgo-local images` prints the service catalog's image binaries, one per line, for scripts.

#[test]
fn images_lists_every_binary_the_catalog_ships_as_an_image() {
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_ftgo-local")).arg("images").output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let printed: Vec<String> = String::from_utf8(run.stdout).unwrap().lines().map(str::to_owned).collect();
    let catalog: Vec<String> = ftgo_catalog::image_binaries().map(str::to_owned).collect();
    assert_eq!(printed, catalog);
    assert!(printed.contains(&"order-service".to_owned()) && printed.contains(&"ftgo-operator".to_owned()));
}
