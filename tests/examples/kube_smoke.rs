use straddle_tests::controlplane::{ControlPlanes, Tools};
fn main() -> anyhow::Result<()> {
    let tools = Tools::find().map_err(anyhow::Error::msg)?;
    let cp = ControlPlanes::start(&tools, &["a"])?;
    let c = &cp.clusters[0];
    println!("{}", c.kubectl(&["version"])?);
    println!("{}", c.kubectl(&["get", "ns"])?);
    std::thread::sleep(std::time::Duration::from_secs(3));
    println!("{}", c.kubectl(&["get", "sa", "-A"])?);
    println!("{}", c.controller_manager_log());
    Ok(())
}
