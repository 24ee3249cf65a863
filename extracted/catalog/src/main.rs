use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = catalog_service::config::Cli::parse();
    service_kit::server::run_main(catalog_service::app::main(cli))
}
