//! The commands that only print: `show`, `names`, `get`, `expand` (spec
//! §9.6–§9.9). No splash, no directory is created, nothing is signalled.

use super::Ctx;
use crate::multi::error::MultiError;
use crate::multi::expand::expand_node;

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
    let Some((wanted, rest)) = args.split_first() else {
        return Err(MultiError::MissingArgument {
            command: "get",
            what: "the full node name to look for",
        });
    };
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
    let Some((template, rest)) = args.split_first() else {
        return Err(MultiError::MissingArgument {
            command: "expand",
            what: "the template",
        });
    };
    let list = ctx.nodes(rest)?;
    let lines = list
        .nodes
        .iter()
        .map(|n| expand_node(template, &n.name))
        .collect::<Result<Vec<_>, _>>()?;
    print_lines(ctx, &lines);
    Ok(crate::exit::OK)
}
