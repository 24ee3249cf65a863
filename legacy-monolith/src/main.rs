use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = legacy_monolith::config::Cli::parse();
    service_kit::server::run_main(legacy_monolith::app::main(cli))
}
