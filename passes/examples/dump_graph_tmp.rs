fn main() {
    let g = ava_passes::onnx::load(std::path::Path::new(&std::env::args().nth(1).unwrap())).unwrap();
    for (k, t) in &g.initializers { println!("INIT {k} {:?} {:?}", t.dtype(), t.dims); }
    for n in &g.nodes { println!("{} {:?} -> {:?} {:?}", n.op, n.inputs, n.outputs, n.attrs); }
}
