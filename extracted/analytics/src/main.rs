use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = analytics_service::config::Cli::parse();
    service_kit::server::run_main(analytics_service::app::main(cli))
}
