//! `reference`: the monolith with 10,000 products behind each proxy, on catalog endpoints.

use super::*;

/// The reference stack's requests: mostly single products (ids 1..=10,000), some list pages.
pub(crate) const REFERENCE_LUA: &str = r#"
math.randomseed(42)
request = function()
  if math.random(10) <= 8 then
    return wrk.format("GET", "/api/products/" .. math.random(10000))
  end
  return wrk.format("GET", "/api/products?page=" .. math.random(50) .. "&per_page=20")
end
"#;

/// The monolith (embedded storage, 10,000 products) behind each proxy, on catalog endpoints.
pub(crate) async fn reference(args: &Args, dir: &Path, lua_dir: &Path) -> anyhow::Result<String> {
    let monolith = Monolith::start(&dir.join("monolith"))?;
    let backend = monolith.addr.clone();
    let lua = lua_dir.join("reference.lua");
    std::fs::write(&lua, format!("{REFERENCE_LUA}{WRK_LUA}"))?;
    let banyan = Banyan::start_with_access_log(
        &sibling_binary("banyan")?,
        &banyan_table(&backend, args.workers, None),
    )
    .await?;
    let cs = contenders(dir, &backend, args, &banyan).await?;
    let runs = measure("reference", &cs, "/", 64, args, &Load::Wrk(&lua))?;
    let mut out = render(
        &format!(
            "reference (monolith, embedded storage, 10,000 products; GET /api/products/{{1..10000}} 80 %, list pages 20 %; 64 connections, median of {} rounds of {} s)",
            args.rounds, args.seconds
        ),
        &runs,
        AGAINST_OTHERS,
    );
    out.push_str(&against_others(&runs, false));
    Ok(out)
}

/// `legacy-monolith demo` on embedded storage in its own directory: seeds 10,000 products.
pub(crate) struct Monolith {
    pub(crate) child: Child,
    pub(crate) addr: String,
}

impl Monolith {
    fn start(data: &Path) -> anyhow::Result<Self> {
        use std::io::BufRead;
        let mut child = Command::new(sibling_binary("legacy-monolith")?)
            .arg("--data-dir")
            .arg(data)
            .args(["demo", "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting legacy-monolith")?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut reader = std::io::BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                bail!("legacy-monolith exited before listening");
            }
            if let Some(addr) = line.trim().strip_prefix("listening on http://") {
                return Ok(Self {
                    addr: addr.to_owned(),
                    child,
                });
            }
        }
    }
}

impl Drop for Monolith {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
