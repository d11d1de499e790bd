//! `lease-contender`: see [`joc_ha_standins::contender`].

fn main() -> std::process::ExitCode {
    joc_ha_standins::contender::contender_main(std::env::args_os())
}
