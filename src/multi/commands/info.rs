//! The commands that only print: `show`, `names`, `get`, `expand` (spec
//! §9.6–§9.9). No splash, no directory is created, nothing is signalled.

use super::Ctx;
use crate::multi::error::MultiError;
use crate::multi::expand::expand_node;

/// The command's own argument, before the node list.
fn first_argument<'a>(
    args: &'a [String],
    command: &'static str,
    what: &'static str,
) -> Result<(&'a String, &'a [String]), MultiError> {
    args.split_first()
        .ok_or(MultiError::MissingArgument { command, what })
}

/// Celery prints one empty line for an empty node list.
fn print_lines(ctx: &Ctx, lines: &[String]) {
    ctx.out.say(&lines.join("\n"));
}

pub fn show(ctx: &Ctx, args: &[String]) -> Result<i32, MultiError> {
    let list = ctx.nodes(args)?;
    let lines: Vec<String> = ctx
        .command_lines(&list)?
        .iter()
        .map(|c| c.display())
        .collect();
    print_lines(ctx, &lines);
    Ok(crate::exit::OK)
}

pub fn names(ctx: &Ctx, args: &[String]) -> Result<i32, MultiError> {
    let list = ctx.nodes(args)?;
    let lines: Vec<String> = list.nodes.iter().map(|n| n.name.clone()).collect();
    print_lines(ctx, &lines);
    Ok(crate::exit::OK)
}

/// `get <full name> <nodes...>`: the matching node's command line without
/// the program. Not found: nothing on stdout, exit 1.
pub fn get(ctx: &Ctx, args: &[String]) -> Result<i32, MultiError> {
    let (wanted, rest) = first_argument(args, "get", "the full node name to look for")?;
    let list = ctx.nodes(rest)?;
    let lines = ctx.command_lines(&list)?;
    match list.nodes.iter().position(|n| &n.name == wanted) {
        Some(i) => {
            ctx.out.say(&lines[i].display_args());
            Ok(crate::exit::OK)
        }
        None => {
            ctx.out
                .error(&format!("rmulti get: no node named {wanted}"));
            Ok(crate::exit::FAILURE)
        }
    }
}

pub fn expand(ctx: &Ctx, args: &[String]) -> Result<i32, MultiError> {
    let (template, rest) = first_argument(args, "expand", "the template")?;
    let list = ctx.nodes(rest)?;
    let lines = list
        .nodes
        .iter()
        .map(|n| expand_node(template, &n.name))
        .collect::<Result<Vec<_>, _>>()?;
    print_lines(ctx, &lines);
    Ok(crate::exit::OK)
}
