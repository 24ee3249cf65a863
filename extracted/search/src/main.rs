use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = search_service::config::Cli::parse();
    service_kit::server::run_main(search_service::app::main(cli))
}
