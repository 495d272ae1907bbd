use clap::Parser;

fn main() -> std::process::ExitCode {
    skiff::server::run(skiff::cli::Options::parse())
}
