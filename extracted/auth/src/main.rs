use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = auth_service::config::Cli::parse();
    service_kit::server::run_main(auth_service::app::main(cli))
}
