//! Misbehaving policy modules, made from a real one: the component compiled
//! from an example spec, with the bodies of its core `review` and
//! `review-admission` exports replaced. `describe()` is untouched, so the
//! module loads and knows its clusters.
//!
//! Replacements (each function keeps its canonical-ABI signature: for
//! `review`, fourteen `i32` parameters, the request flattened, and an `i32`
//! pointer to the verdict; for `review-admission`, the cluster's and the
//! body's pointer and length, and a pointer to the optional answer):
//! * `Trap`: `unreachable`.
//! * `Loop`: a loop that never exits (stopped by the epoch deadline).
//! * `Grow`: grows memory by 1 MiB until refused (stopped by the memory
//!   limit).
//!
//! With `only_statefulsets`, `review` gives `allow` to requests whose `kind`
//! is not 11 bytes long ("StatefulSet"), and `review-admission` leaves bodies
//! under 3,000 bytes to the host (`none`; the StatefulSet fixtures are
//! larger, the canary and the Service fixtures smaller), so the module
//! passes the webhook's canary reviews (a ConfigMap) and misbehaves on real
//! chart objects.

use std::convert::Infallible;

use wasm_encoder::reencode::{self, Reencode};
use wasm_encoder::{BlockType, CodeSection, Function, Instruction, MemArg};
use wasmparser::{ExternalKind, Parser, Payload, TypeRef, ValType};

const REVIEW_EXPORT: &str = "straddle:policy/review@0.1.0#review";
const REVIEW_ADMISSION_EXPORT: &str = "straddle:policy/admission@0.1.0#review-admission";
/// `review-admission` misbehaves on bodies at least this long.
const LARGE_BODY: i32 = 3_000;
/// A component's core-module section id.
const CORE_MODULE_SECTION: u8 = 1;

#[derive(Clone, Copy, Debug)]
pub enum Misbehaviour {
    Trap,
    Loop,
    Grow,
}

/// `component` (a policy module) with `review` replaced as described above.
pub fn misbehaving(component: &[u8], what: Misbehaviour, only_statefulsets: bool) -> Vec<u8> {
    assert!(Parser::is_component(component), "not a component");
    let mut out = component[..8].to_vec();
    let mut pos = 8;
    let mut patched = 0;
    while pos < component.len() {
        let id = component[pos];
        let (size, leb) = read_leb(&component[pos + 1..]);
        let start = pos + 1 + leb;
        let end = start + size as usize;
        let contents = &component[start..end];
        match (id == CORE_MODULE_SECTION)
            .then(|| review_indices(contents))
            .flatten()
        {
            Some(targets) => {
                let module = rewrite(contents, targets, what, only_statefulsets);
                out.push(CORE_MODULE_SECTION);
                write_leb(&mut out, module.len() as u32);
                out.extend_from_slice(&module);
                patched += 1;
            }
            None => out.extend_from_slice(&component[pos..end]),
        }
        pos = end;
    }
    assert_eq!(
        patched, 1,
        "exactly one core module exports {REVIEW_EXPORT}"
    );
    wasmparser::Validator::new()
        .validate_all(&out)
        .expect("the patched module validates");
    out
}

/// The indices of the `review` and `review-admission` exports among the
/// module's defined functions, checking their signatures.
fn review_indices(module: &[u8]) -> Option<Targets> {
    let mut imported_funcs = 0;
    let mut func_types: Vec<u32> = Vec::new();
    let mut types: Vec<(usize, Vec<ValType>)> = Vec::new();
    let (mut index, mut admission) = (None, None);
    for payload in Parser::new(0).parse_all(module) {
        match payload.ok()? {
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    if let TypeRef::Func(_) = import.ok()?.ty {
                        imported_funcs += 1;
                    }
                }
            }
            Payload::TypeSection(reader) => {
                for ty in reader.into_iter_err_on_gc_types() {
                    let ty = ty.ok()?;
                    types.push((ty.params().len(), ty.results().to_vec()));
                }
            }
            Payload::FunctionSection(reader) => {
                for ty in reader {
                    func_types.push(ty.ok()?);
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.ok()?;
                    if export.kind != ExternalKind::Func {
                        continue;
                    }
                    match export.name {
                        REVIEW_EXPORT => index = Some(export.index),
                        REVIEW_ADMISSION_EXPORT => admission = Some(export.index),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let signature = |index: u32| &types[func_types[(index - imported_funcs) as usize] as usize];
    let review = index?;
    assert_eq!(
        signature(review),
        &(14, vec![ValType::I32]),
        "review(request) -> verdict flattens to 14 i32 parameters and a return pointer"
    );
    let admission = admission.expect("the module exports review-admission");
    assert_eq!(
        signature(admission),
        &(4, vec![ValType::I32]),
        "review-admission(cluster, body) flattens to 4 i32 parameters and a return pointer"
    );
    Some(Targets {
        review: review - imported_funcs,
        admission: admission - imported_funcs,
    })
}

/// Indices among a module's defined functions.
#[derive(Clone, Copy)]
struct Targets {
    review: u32,
    admission: u32,
}

struct Patch {
    targets: Targets,
    next: u32,
    what: Misbehaviour,
    only_statefulsets: bool,
}

impl Reencode for Patch {
    type Error = Infallible;

    fn parse_function_body(
        &mut self,
        code: &mut CodeSection,
        func: wasmparser::FunctionBody<'_>,
    ) -> Result<(), reencode::Error<Infallible>> {
        let index = self.next;
        self.next += 1;
        let review = index == self.targets.review;
        if !review && index != self.targets.admission {
            return reencode::utils::parse_function_body(self, code, func);
        }
        let mut f = Function::new(Vec::<(u32, wasm_encoder::ValType)>::new());
        if self.only_statefulsets {
            // review: if kind.len != 11 { verdict::allow }
            // review-admission: if body.len < LARGE_BODY { option::none }
            let (local, value, differs) = if review {
                (4, 11, Instruction::I32Ne)
            } else {
                (3, LARGE_BODY, Instruction::I32LtU)
            };
            f.instruction(&Instruction::LocalGet(local));
            f.instruction(&Instruction::I32Const(value));
            f.instruction(&differs);
            f.instruction(&Instruction::If(BlockType::Empty));
            // memory[8] = 0 (both results' first case); return 8
            f.instruction(&Instruction::I32Const(8));
            f.instruction(&Instruction::I32Const(0));
            f.instruction(&Instruction::I32Store8(MemArg {
                offset: 0,
                align: 0,
                memory_index: 0,
            }));
            f.instruction(&Instruction::I32Const(8));
            f.instruction(&Instruction::Return);
            f.instruction(&Instruction::End);
        }
        match self.what {
            Misbehaviour::Trap => {}
            Misbehaviour::Loop => {
                f.instruction(&Instruction::Loop(BlockType::Empty));
                f.instruction(&Instruction::Br(0));
                f.instruction(&Instruction::End);
            }
            Misbehaviour::Grow => {
                f.instruction(&Instruction::Loop(BlockType::Empty));
                f.instruction(&Instruction::I32Const(16));
                f.instruction(&Instruction::MemoryGrow(0));
                f.instruction(&Instruction::I32Const(-1));
                f.instruction(&Instruction::I32Ne);
                f.instruction(&Instruction::BrIf(0));
                f.instruction(&Instruction::End);
            }
        }
        f.instruction(&Instruction::Unreachable);
        f.instruction(&Instruction::End);
        code.function(&f);
        Ok(())
    }
}

fn rewrite(
    module: &[u8],
    targets: Targets,
    what: Misbehaviour,
    only_statefulsets: bool,
) -> Vec<u8> {
    let mut patch = Patch {
        targets,
        next: 0,
        what,
        only_statefulsets,
    };
    let mut out = wasm_encoder::Module::new();
    patch
        .parse_core_module(&mut out, Parser::new(0), module)
        .expect("re-encoding the core module");
    out.finish()
}

fn read_leb(bytes: &[u8]) -> (u32, usize) {
    let (mut value, mut shift) = (0u32, 0);
    for (i, b) in bytes.iter().enumerate() {
        value |= u32::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return (value, i + 1);
        }
        shift += 7;
    }
    panic!("truncated LEB128");
}

fn write_leb(out: &mut Vec<u8>, mut value: u32) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}
